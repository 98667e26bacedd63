//! On-disk structures, one struct per table of `spec/FORMAT.md`.
//!
//! These are plain data: parsing checks only what binrw can (magic values); every semantic rule of the
//! spec is checked by the reader, which knows the file name and offsets to put in its errors.

use binrw::{binrw, BinRead, BinWrite};
use std::io::Cursor;

/// `\x89MFA\r\n\x1a\n`: the 0x89 and the line-ending bytes catch transfers that mangle binary files.
pub const MAGIC: [u8; 8] = *b"\x89MFA\r\n\x1a\n";
/// Last 8 bytes of every archive; their absence means truncation.
pub const END_MAGIC: [u8; 8] = *b"\x89MFI\r\n\x1a\n";

pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;

pub const HEADER_LEN: u64 = 32;
pub const FOOTER_LEN: u64 = 40;
pub const INDEX_HEADER_LEN: u64 = 32;
pub const ENTRY_RECORD_LEN: u64 = 64;
pub const FRAME_END_LEN: u64 = 8;
pub const LOOKUP_LEN: u64 = 4;

pub const MIN_FRAME_SIZE_LOG2: u8 = 12;
pub const MAX_FRAME_SIZE_LOG2: u8 = 26;
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_COMPONENT_LEN: usize = 255;
pub const MAX_MODE: u32 = 0o7777;

/// Compression method codes of [`EntryRecord::compression`].
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 8],
    pub version_major: u16,
    pub version_minor: u16,
    pub frame_size_log2: u8,
    pub reserved0: u8,
    pub flags: u16,
    pub reserved1: u64,
    pub header_hash: u64,
}

#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
    pub index_hash: u64,
    pub footer_hash: u64,
    pub end_magic: [u8; 8],
}

#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub entry_count: u64,
    pub frame_count: u64,
    pub strings_len: u64,
    pub reserved: u64,
}

#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryRecord {
    pub path_offset: u32,
    pub path_len: u32,
    pub compression: u8,
    pub level: i8,
    pub reserved: u16,
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    pub first_frame: u32,
    pub size: u64,
    pub stored_size: u64,
    pub offset: u64,
    pub content_hash: u64,
}

impl Header {
    pub fn new(frame_size_log2: u8) -> Self {
        let mut header = Header {
            magic: MAGIC,
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            frame_size_log2,
            reserved0: 0,
            flags: 0,
            reserved1: 0,
            header_hash: 0,
        };
        header.header_hash = header.compute_hash();
        header
    }

    /// xxh3 of the first 24 bytes, as the spec defines `header_hash`.
    pub fn compute_hash(&self) -> u64 {
        let bytes = to_bytes(self);
        xxhash_rust::xxh3::xxh3_64(&bytes[..24])
    }
}

impl Footer {
    pub fn new(index_offset: u64, index_len: u64, index_hash: u64) -> Self {
        let mut footer = Footer { index_offset, index_len, index_hash, footer_hash: 0, end_magic: END_MAGIC };
        footer.footer_hash = footer.compute_hash();
        footer
    }

    /// xxh3 of the first 24 bytes, as the spec defines `footer_hash`.
    pub fn compute_hash(&self) -> u64 {
        let bytes = to_bytes(self);
        xxhash_rust::xxh3::xxh3_64(&bytes[..24])
    }
}

/// Serialises a fixed-size structure. Writing into a `Vec` cannot fail for these types.
pub fn to_bytes<T>(value: &T) -> Vec<u8>
where
    T: for<'a> BinWrite<Args<'a> = ()>,
{
    let mut cursor = Cursor::new(Vec::with_capacity(64));
    value.write_le(&mut cursor).expect("writing a fixed-size struct into a Vec is infallible");
    cursor.into_inner()
}

/// Parses a fixed-size structure from a slice that the caller has checked is long enough.
pub fn from_bytes<T>(bytes: &[u8]) -> Option<T>
where
    T: for<'a> BinRead<Args<'a> = ()>,
{
    T::read_le(&mut Cursor::new(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_spec() {
        assert_eq!(to_bytes(&Header::new(18)).len() as u64, HEADER_LEN);
        assert_eq!(to_bytes(&Footer::new(32, 32, 0)).len() as u64, FOOTER_LEN);
        let ih = IndexHeader { entry_count: 0, frame_count: 0, strings_len: 0, reserved: 0 };
        assert_eq!(to_bytes(&ih).len() as u64, INDEX_HEADER_LEN);
        assert_eq!(to_bytes(&EntryRecord::default()).len() as u64, ENTRY_RECORD_LEN);
    }

    #[test]
    fn header_bytes_are_exactly_as_specified() {
        let bytes = to_bytes(&Header::new(18));
        assert_eq!(&bytes[0..8], b"\x89MFA\r\n\x1a\n");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(bytes[12], 18);
        assert_eq!(&bytes[13..24], &[0; 11]);
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes[..24]);
        assert_eq!(&bytes[24..32], &hash.to_le_bytes());
    }

    #[test]
    fn entry_record_field_offsets_match_the_spec() {
        let record = EntryRecord {
            path_offset: 0x0101_0101,
            path_len: 0x0202_0202,
            compression: 3,
            level: -4,
            reserved: 0,
            mode: 0x0505_0505,
            mtime_secs: 0x0606_0606_0606_0606,
            mtime_nanos: 0x0707_0707,
            first_frame: 0x0808_0808,
            size: 0x0909_0909_0909_0909,
            stored_size: 0x0a0a_0a0a_0a0a_0a0a,
            offset: 0x0b0b_0b0b_0b0b_0b0b,
            content_hash: 0x0c0c_0c0c_0c0c_0c0c,
        };
        let b = to_bytes(&record);
        assert_eq!(&b[0..4], &[1; 4]);
        assert_eq!(&b[4..8], &[2; 4]);
        assert_eq!(b[8], 3);
        assert_eq!(b[9], (-4i8) as u8);
        assert_eq!(&b[12..16], &[5; 4]);
        assert_eq!(&b[16..24], &[6; 8]);
        assert_eq!(&b[24..28], &[7; 4]);
        assert_eq!(&b[28..32], &[8; 4]);
        assert_eq!(&b[32..40], &[9; 8]);
        assert_eq!(&b[40..48], &[10; 8]);
        assert_eq!(&b[48..56], &[11; 8]);
        assert_eq!(&b[56..64], &[12; 8]);
        assert_eq!(from_bytes::<EntryRecord>(&b), Some(record));
    }
}
