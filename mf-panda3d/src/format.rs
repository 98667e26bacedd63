//! On-disk structures of a Panda3D Multifile, one struct per table of `spec/PANDA3D.md`.
//!
//! Plain data, as in [`mf_format::format`]: parsing checks only what binrw can; the reader checks every
//! rule that needs the file name and offsets for its errors.

use binrw::binrw;

/// `pmf\0\n\r`, at the start of the file or right after a `#` header prefix.
pub const MAGIC: [u8; 6] = *b"pmf\0\n\r";
pub const VERSION_MAJOR: i16 = 1;
/// The newest minor version; 1.1 added the header and per-subfile timestamps.
pub const VERSION_MINOR: i16 = 1;

/// Header bytes after the prefix: 18 in v1.1, 14 in v1.0 (no timestamp).
pub const HEADER_LEN_V1_1: u64 = 18;
pub const HEADER_LEN_V1_0: u64 = 14;

pub const FLAG_DELETED: u16 = 0x0001;
pub const FLAG_INDEX_INVALID: u16 = 0x0002;
pub const FLAG_DATA_INVALID: u16 = 0x0004;
pub const FLAG_COMPRESSED: u16 = 0x0008;
pub const FLAG_ENCRYPTED: u16 = 0x0010;
pub const FLAG_SIGNATURE: u16 = 0x0020;
pub const FLAG_TEXT: u16 = 0x0040;

/// Every name byte is XORed with this (obfuscation, not security).
pub const NAME_XOR: u8 = 0xff;

/// The 6-byte plaintext prefix of every encrypted subfile; a wrong password shows up as its absence.
pub const ENCRYPTION_CHECK: &[u8; 6] = b"crypty";

/// Extensions `multify -z` stores without compression unless `-Z` says otherwise.
pub const MULTIFY_UNCOMPRESSED_EXTENSIONS: &[&str] = &["jpg", "png", "mp3", "ogg"];

/// The fixed header after the prefix. `timestamp` exists only in version 1.1 (minor >= 1).
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 6],
    pub version_major: i16,
    pub version_minor: i16,
    pub scale_factor: u32,
    #[br(if(version_minor >= 1))]
    pub timestamp: Option<u32>,
}

/// One entry of the index chain (without the 4-byte terminator, which is a `next` of 0).
#[binrw]
#[brw(little, import(has_timestamp: bool))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position of the next entry divided by the scale factor; 0 ends the chain.
    pub next: u32,
    /// Position of the data divided by the scale factor.
    pub data_start: u32,
    /// Bytes stored (not scaled).
    pub data_length: u32,
    pub flags: u16,
    /// Original size; present when the data is compressed or encrypted.
    #[br(if(flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0))]
    pub uncompressed_length: Option<u32>,
    /// Present in version 1.1; 0 means "use the header's timestamp".
    #[br(if(has_timestamp))]
    pub timestamp: Option<u32>,
    #[br(temp)]
    #[bw(try_calc(u16::try_from(name.len())))]
    name_len: u16,
    /// The name with every byte XORed with 0xff.
    #[br(count = name_len)]
    pub name: Vec<u8>,
}

/// The record before an encrypted subfile's ciphertext (followed by an IV of the cipher's IV length).
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionHeader {
    /// OpenSSL NID of the cipher (91 = bf-cbc, multify's default).
    pub cipher_nid: u16,
    pub key_length: u16,
    /// PBKDF2 iterations are `count * 1000 + 1`.
    pub iteration_count: u16,
}

pub const ENCRYPTION_HEADER_LEN: usize = 6;

impl IndexEntry {
    /// Bytes the entry occupies on disk.
    pub fn encoded_len(&self) -> u64 {
        let mut len = 4 + 4 + 4 + 2 + 2 + self.name.len() as u64;
        if self.uncompressed_length.is_some() {
            len += 4;
        }
        if self.timestamp.is_some() {
            len += 4;
        }
        len
    }
}

/// XORs a name with [`NAME_XOR`]; the operation is its own inverse.
pub fn xor_name(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ NAME_XOR).collect()
}

/// Rounds `position` up to a multiple of `scale` (which is at least 1).
pub fn pad_to_scale(position: u64, scale: u64) -> u64 {
    position.div_ceil(scale).saturating_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use binrw::{BinRead, BinWrite};
    use std::io::Cursor;

    #[test]
    fn header_round_trips_both_versions() {
        // From the reference hexdump of `multify -c -T 0`.
        let v11 = [0x70, 0x6d, 0x66, 0, 0x0a, 0x0d, 1, 0, 1, 0, 1, 0, 0, 0, 0xb5, 0x39, 0x01, 0x6b];
        let header = Header::read(&mut Cursor::new(&v11[..])).unwrap();
        assert_eq!(header.magic, MAGIC);
        assert_eq!((header.version_major, header.version_minor, header.scale_factor), (1, 1, 1));
        assert_eq!(header.timestamp, Some(0x6b0139b5));
        let mut out = Cursor::new(Vec::new());
        header.write(&mut out).unwrap();
        assert_eq!(out.into_inner(), v11);

        let v10 = [0x70, 0x6d, 0x66, 0, 0x0a, 0x0d, 1, 0, 0, 0, 16, 0, 0, 0];
        let header = Header::read(&mut Cursor::new(&v10[..])).unwrap();
        assert_eq!((header.version_minor, header.scale_factor, header.timestamp), (0, 16, None));
    }

    #[test]
    fn index_entry_matches_the_reference_hexdump() {
        // Entry at 0x12 of the `-z -T 0` example: next 0x2f, data 0x50, len 20, flags 0x48, ulen 12.
        let bytes = [
            0x2f, 0, 0, 0, 0x50, 0, 0, 0, 0x14, 0, 0, 0, 0x48, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0x9e, 0xd1, 0x8b,
            0x87, 0x8b,
        ];
        let entry = IndexEntry::read_args(&mut Cursor::new(&bytes[..]), (true,)).unwrap();
        assert_eq!((entry.next, entry.data_start, entry.data_length, entry.flags), (0x2f, 0x50, 20, 0x48));
        assert_eq!(entry.uncompressed_length, Some(12));
        assert_eq!(entry.timestamp, Some(0));
        assert_eq!(xor_name(&entry.name), b"a.txt");
        assert_eq!(entry.encoded_len(), bytes.len() as u64);
        let mut out = Cursor::new(Vec::new());
        entry.write_args(&mut out, (true,)).unwrap();
        assert_eq!(out.into_inner(), bytes);

        // Version 1.0, uncompressed: no ulen, no timestamp.
        let bytes = [9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0x9e];
        let entry = IndexEntry::read_args(&mut Cursor::new(&bytes[..]), (false,)).unwrap();
        assert_eq!((entry.uncompressed_length, entry.timestamp), (None, None));
        assert_eq!(entry.encoded_len(), 17);
    }

    #[test]
    fn padding() {
        assert_eq!(pad_to_scale(18, 1), 18);
        assert_eq!(pad_to_scale(18, 16), 32);
        assert_eq!(pad_to_scale(32, 16), 32);
    }
}
