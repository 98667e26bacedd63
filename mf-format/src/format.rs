//! On-disk structures, one struct per table of `spec/FORMAT.md` (version 2.1; 1.0's differences are
//! noted where a struct also serves 1.0).
//!
//! These are plain data: parsing checks only what binrw can (magic values); every semantic rule of the
//! spec is checked by the reader, which knows the file name and offsets to put in its errors.

use binrw::{binrw, BinRead, BinWrite};
use std::io::Cursor;

/// `\x89MFA\r\n\x1a\n`: the 0x89 and the line-ending bytes catch transfers that mangle binary files.
pub const MAGIC: [u8; 8] = *b"\x89MFA\r\n\x1a\n";
/// Last 8 bytes of every archive; their absence means truncation.
pub const END_MAGIC: [u8; 8] = *b"\x89MFI\r\n\x1a\n";

/// The major version writers write (2.1); readers also read [`VERSION_MAJOR_1`].
pub const VERSION_MAJOR: u16 = 2;
/// The minor version writers write: 1 gave meaning to the entry flag [`ENTRY_FLAG_X86`].
pub const VERSION_MINOR: u16 = 1;
/// The older major version readers still read (spec Appendix A).
pub const VERSION_MAJOR_1: u16 = 1;

/// Bytes of the header at offset 0.
pub const HEADER_LEN: u64 = 32;
/// Bytes of one commit slot (2.0); two follow the header.
pub const SLOT_LEN: u64 = 32;
/// First byte of a 2.0 data area: after the header and both commit slots.
pub const DATA_START: u64 = HEADER_LEN + 2 * SLOT_LEN;
/// Bytes of the footer.
pub const FOOTER_LEN: u64 = 40;
/// Bytes of the index header.
pub const INDEX_HEADER_LEN: u64 = 32;
/// Bytes of one entry record (both versions).
pub const ENTRY_RECORD_LEN: u64 = 64;
/// Bytes of one 2.0 frame record.
pub const FRAME_RECORD_LEN: u64 = 16;
/// Bytes of one 1.0 frame end.
pub const FRAME_END_LEN: u64 = 8;
/// Bytes of one lookup-table slot.
pub const LOOKUP_LEN: u64 = 4;

/// Smallest `frame_size_log2` (4 KiB frames).
pub const MIN_FRAME_SIZE_LOG2: u8 = 12;
/// Largest `frame_size_log2` (64 MiB frames): bounds every frame decode allocation.
pub const MAX_FRAME_SIZE_LOG2: u8 = 26;
/// Longest entry path in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Highest permission bits an entry may carry.
pub const MAX_MODE: u32 = 0o7777;

/// Storage code of [`EntryRecord::compression`]: a raw extent (1.0: compression none).
pub const COMPRESSION_NONE: u8 = 0;
/// Storage code of [`EntryRecord::compression`]: a run of frames (1.0: zstd frames).
pub const COMPRESSION_ZSTD: u8 = 1;
/// [`EntryRecord::flags`] bit: the writer put the entry in its solid stream (informational).
pub const ENTRY_FLAG_SOLID: u16 = 1;
/// [`EntryRecord::flags`] bit (2.1): the entry's compressed frames hold its content transformed by
/// the x86 branch filter ([`crate::x86`]); only on entries with frames that are not `SOLID`.
pub const ENTRY_FLAG_X86: u16 = 2;
/// Every entry flag this version knows; a record with another bit set is refused.
pub const ENTRY_FLAGS_KNOWN: u16 = ENTRY_FLAG_SOLID | ENTRY_FLAG_X86;

/// The header (spec "Header").
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// 2 (or 1 for an old archive).
    pub version_major: u16,
    /// 1 (readers read any).
    pub version_minor: u16,
    /// log2 of the largest uncompressed frame length, 12 to 26.
    pub frame_size_log2: u8,
    /// Zero.
    pub reserved0: u8,
    /// Zero; readers ignore unknown bits.
    pub flags: u16,
    /// Zero.
    pub reserved1: u64,
    /// xxh3 of bytes 0..24.
    pub header_hash: u64,
}

/// A commit slot (2.0, spec "Commit slots"); all zero when empty.
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSlot {
    /// 0 for an empty slot, else the commit's sequence number (the highest valid one wins).
    pub generation: u64,
    /// Absolute offset of this commit's footer.
    pub footer_offset: u64,
    /// Zero.
    pub reserved: u64,
    /// xxh3 of slot bytes 0..24; a mismatch marks a torn slot, which readers ignore.
    pub slot_hash: u64,
}

/// The footer (spec "Footer").
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Absolute offset of the index.
    pub index_offset: u64,
    /// Index length in bytes; the footer starts right after the index.
    pub index_len: u64,
    /// xxh3 of the index bytes.
    pub index_hash: u64,
    /// xxh3 of footer bytes 0..24.
    pub footer_hash: u64,
    /// [`END_MAGIC`].
    pub end_magic: [u8; 8],
}

/// The index header (spec "Index header"; in 1.0 the last 8 bytes are one reserved zero field).
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Number of entry records (below 2³²).
    pub entry_count: u64,
    /// Number of frame records (1.0: frame ends), below 2³².
    pub frame_count: u64,
    /// Length of the string table in bytes.
    pub strings_len: u64,
    /// Reserved for a dictionary table; must be 0.
    pub dictionary_count: u32,
    /// Zero.
    pub reserved: u32,
}

/// One frame of the frame table (2.0, spec "Frame record").
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameRecord {
    /// Absolute offset of the stored bytes.
    pub offset: u64,
    /// Stored bytes, 1 to `len`; equal to `len` means stored raw, else one zstd frame.
    pub stored_len: u32,
    /// Uncompressed length, 1 to the archive's frame size.
    pub len: u32,
}

/// One entry record (spec "Entry record"). The reader converts 1.0 records to this 2.0 form at open,
/// so [`crate::Entry::record`] always has 2.0 meaning.
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryRecord {
    /// Offset of the path in the string table.
    pub path_offset: u32,
    /// Path length in bytes, 1 to 4096.
    pub path_len: u32,
    /// Storage: [`COMPRESSION_NONE`] (raw extent) or [`COMPRESSION_ZSTD`] (a run of frames).
    pub compression: u8,
    /// zstd level the writer used; 0 for raw entries. Informational.
    pub level: i8,
    /// [`ENTRY_FLAG_SOLID`], [`ENTRY_FLAG_X86`] or 0 (1.0: reserved, zero).
    pub flags: u16,
    /// Unix permission bits, at most `0o7777`.
    pub mode: u32,
    /// Seconds since the Unix epoch; 0 when not kept.
    pub mtime_secs: i64,
    /// Nanoseconds, below 10⁹.
    pub mtime_nanos: u32,
    /// Frames: index of the run's first frame in the frame table; raw: 0.
    pub first_frame: u32,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Frames: frames in the run, at least 1; raw: 0. (In a 1.0 file this field holds the stored
    /// size; the reader converts it.)
    pub frame_count: u64,
    /// Raw: absolute offset of the content (0 for an empty entry). Frames: the skip, the entry's first
    /// byte within its first frame's decoded content.
    pub offset: u64,
    /// xxh3 of the uncompressed content.
    pub content_hash: u64,
}

impl Header {
    /// A 2.1 header with the given frame size and its hash.
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

impl CommitSlot {
    /// A filled slot pointing at the footer at `footer_offset`, with its hash.
    pub fn new(generation: u64, footer_offset: u64) -> Self {
        let mut slot = CommitSlot { generation, footer_offset, reserved: 0, slot_hash: 0 };
        slot.slot_hash = slot.compute_hash();
        slot
    }

    /// xxh3 of the first 24 bytes, as the spec defines `slot_hash`.
    pub fn compute_hash(&self) -> u64 {
        let bytes = to_bytes(self);
        xxhash_rust::xxh3::xxh3_64(&bytes[..24])
    }
}

impl Footer {
    /// A footer for the index at `index_offset`, with its hash.
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

/// XXH3-64 with seed 0, the checksum every table of the spec uses.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
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
        let ih = IndexHeader { entry_count: 0, frame_count: 0, strings_len: 0, dictionary_count: 0, reserved: 0 };
        assert_eq!(to_bytes(&ih).len() as u64, INDEX_HEADER_LEN);
        assert_eq!(to_bytes(&FrameRecord::default()).len() as u64, FRAME_RECORD_LEN);
        assert_eq!(to_bytes(&CommitSlot::new(1, 2)).len() as u64, SLOT_LEN);
        assert_eq!(to_bytes(&EntryRecord::default()).len() as u64, ENTRY_RECORD_LEN);
    }

    #[test]
    fn header_bytes_are_exactly_as_specified() {
        let bytes = to_bytes(&Header::new(18));
        assert_eq!(&bytes[0..8], b"\x89MFA\r\n\x1a\n");
        assert_eq!(&bytes[8..10], &[2, 0]);
        assert_eq!(&bytes[10..12], &[1, 0]);
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
            flags: 0,
            mode: 0x0505_0505,
            mtime_secs: 0x0606_0606_0606_0606,
            mtime_nanos: 0x0707_0707,
            first_frame: 0x0808_0808,
            size: 0x0909_0909_0909_0909,
            frame_count: 0x0a0a_0a0a_0a0a_0a0a,
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

    #[test]
    fn frame_record_and_slot_field_offsets_match_the_spec() {
        let frame = FrameRecord { offset: 0x0101_0101_0101_0101, stored_len: 0x0202_0202, len: 0x0303_0303 };
        let b = to_bytes(&frame);
        assert_eq!((&b[0..8], &b[8..12], &b[12..16]), (&[1u8; 8][..], &[2u8; 4][..], &[3u8; 4][..]));
        let slot = CommitSlot::new(7, 0x0909);
        let b = to_bytes(&slot);
        assert_eq!(&b[0..8], &7u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x0909u64.to_le_bytes());
        assert_eq!(&b[16..24], &[0; 8]);
        assert_eq!(&b[24..32], &xxhash_rust::xxh3::xxh3_64(&b[..24]).to_le_bytes());
    }
}
