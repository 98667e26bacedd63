//! The block hash table (spec/RELEASE.md "Block hash tables and mounting from a repository"): one
//! SHA-256 per fixed-size block of a version's archive file, published beside it and bound to the
//! signed manifest by hash and size, so a client can check every block it fetches on its own.
//!
//! Fixed blocks of the file, not the archive's frames: the table is independent of the archive's
//! layout, covers the header, index and footer too, and makes a local cache a simple block bitmap.

use std::io::{Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use binrw::{binrw, BinRead, BinWrite};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::ObjectRef;

/// The table's first 8 bytes.
pub const BLOCK_TABLE_MAGIC: [u8; 8] = *b"MFBLOCK1";
/// The block size publishers use.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 << 10;
/// The smallest block size a table may declare.
pub const MIN_BLOCK_SIZE: u32 = 4 << 10;
/// The largest block size a table may declare.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;
/// At most this many open ranges.
pub const MAX_OPEN_RANGES: usize = 4;
/// Clients refuse a table larger than this before fetching it (2 Mi blocks: 128 GiB of archive at
/// 64 KiB blocks).
pub const MAX_BLOCK_TABLE_SIZE: u64 = 64 << 20;
/// Publishers embed the open ranges' blocks only when they total at most this many bytes.
pub const MAX_EMBEDDED: u64 = 16 << 20;
/// Bytes before the open ranges: magic, block size, archive size, archive SHA-256, range count,
/// embedded length.
const FIXED_LEN: u64 = 8 + 4 + 8 + 32 + 4 + 8;
/// Bytes of one open range.
const RANGE_LEN: u64 = 16;
/// Bytes of one block digest.
const DIGEST_LEN: u64 = 32;

/// A byte range of the archive file.
#[binrw]
#[brw(little)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Length in bytes (at least 1).
    pub len: u64,
}

impl ByteRange {
    /// One past the last byte (`None` on overflow).
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// A block hash table, as stored (`blocks/<sha256>.bin`), little-endian. Read with
/// [`BlockTable::parse`], which checks the length first and every rule below.
#[binrw]
#[brw(little, magic = b"MFBLOCK1")]
#[br(import(table_len: u64))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTable {
    /// Bytes per block: a power of two from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
    #[br(assert(
        valid_block_size(block_size),
        "block size {} is not a power of two from 4 KiB to 16 MiB",
        block_size
    ))]
    pub block_size: u32,
    /// Length of the archive file; equals the manifest's `full.size`.
    pub archive_size: u64,
    /// SHA-256 of the whole archive file; equals the manifest's `full.sha256`.
    pub archive_sha256: [u8; 32],
    /// How many open ranges follow, at most [`MAX_OPEN_RANGES`].
    #[br(temp, assert(range_count as usize <= MAX_OPEN_RANGES, "{} open ranges, at most 4 are allowed", range_count))]
    #[bw(calc = open_ranges.len() as u32)]
    range_count: u32,
    /// Bytes of [`BlockTable::embedded`]: 0, or exactly [`embedded_len_of`] the open ranges.
    #[br(temp)]
    #[bw(calc = embedded.len() as u64)]
    embedded_len: u64,
    /// The ranges of the archive a reader opening it reads (header and commit slots; index and
    /// footer), each non-empty and inside the file; fetched first by a mount.
    #[br(count = range_count)]
    #[br(assert(open_ranges.iter().all(|r| r.len > 0 && r.end().is_some_and(|end| end <= archive_size)), "an open range lies outside the {}-byte archive", archive_size))]
    #[br(assert(embedded_len == 0 || embedded_len == embedded_len_of(&open_ranges, block_size, archive_size), "{}", embedded_mismatch(embedded_len, &open_ranges, block_size, archive_size)))]
    #[br(assert(table_len_of(archive_size, block_size, open_ranges.len(), embedded_len) == Some(table_len), "{}", length_mismatch(table_len, archive_size, block_size, open_ranges.len(), embedded_len)))]
    pub open_ranges: Vec<ByteRange>,
    /// SHA-256 of each block of the archive file in order, `ceil(archive_size / block_size)` of them;
    /// the last block is short when the size is not a multiple of the block size.
    #[br(count = archive_size.div_ceil(u64::from(block_size)))]
    pub digests: Vec<[u8; 32]>,
    /// Either nothing, or the bytes of every block that covers an open range ([`BlockTable::embedded_blocks`]):
    /// block-aligned, overlapping and adjacent runs merged, in file order. A mount writes them into its
    /// cache (each checked against its digest) and opens the archive without a range request.
    #[br(count = embedded_len)]
    pub embedded: Vec<u8>,
}

fn valid_block_size(size: u32) -> bool {
    size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size)
}

/// The exact length of a table for these parameters (`None` when it cannot be represented).
fn table_len_of(archive_size: u64, block_size: u32, ranges: usize, embedded_len: u64) -> Option<u64> {
    let blocks = archive_size.div_ceil(u64::from(block_size.max(1)));
    FIXED_LEN
        .checked_add(RANGE_LEN * ranges as u64)?
        .checked_add(blocks.checked_mul(DIGEST_LEN)?)?
        .checked_add(embedded_len)
}

/// Why a table of `table_len` bytes cannot hold what its header declares.
fn length_mismatch(table_len: u64, archive_size: u64, block_size: u32, ranges: usize, embedded_len: u64) -> String {
    let needs = match table_len_of(archive_size, block_size, ranges, embedded_len) {
        Some(len) => format!("{len} bytes"),
        None => "more than 2^64 bytes".into(),
    };
    format!(
        "the table is {table_len} bytes, but a {archive_size}-byte archive in {block_size}-byte blocks with {ranges} open ranges and {embedded_len} embedded bytes needs {needs}"
    )
}

/// The runs of blocks `[first, end)` covering `ranges` (clamped to the archive): sorted, with
/// overlapping and adjacent runs merged.
fn cover_of(ranges: &[ByteRange], block_size: u32, archive_size: u64) -> Vec<std::ops::Range<u64>> {
    let size = u64::from(block_size.max(1));
    let mut runs: Vec<std::ops::Range<u64>> = ranges
        .iter()
        .filter_map(|r| {
            let end = r.offset.saturating_add(r.len).min(archive_size);
            (r.offset < end).then(|| (r.offset / size)..end.div_ceil(size))
        })
        .collect();
    runs.sort_by_key(|run| run.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if run.start <= last.end => last.end = last.end.max(run.end),
            _ => merged.push(run),
        }
    }
    merged
}

/// Bytes of the blocks covering `ranges`: what an embedding of them holds.
pub fn embedded_len_of(ranges: &[ByteRange], block_size: u32, archive_size: u64) -> u64 {
    let size = u64::from(block_size.max(1));
    cover_of(ranges, block_size, archive_size)
        .iter()
        .map(|run| run.end.saturating_mul(size).min(archive_size) - run.start.saturating_mul(size).min(archive_size))
        .fold(0u64, u64::saturating_add)
}

/// Why `embedded_len` embedded bytes do not fit these open ranges.
fn embedded_mismatch(embedded_len: u64, ranges: &[ByteRange], block_size: u32, archive_size: u64) -> String {
    format!(
        "{embedded_len} embedded bytes, but the blocks covering the open ranges are {} bytes (and none is allowed)",
        embedded_len_of(ranges, block_size, archive_size)
    )
}

impl BlockTable {
    /// Parses table bytes fetched from `origin` (a URL, for messages). The length is checked against
    /// what the header declares before a digest is read, so nothing is allocated beyond the input's size.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<BlockTable> {
        let bad = |what: String| Error::BadBlockTable { origin: origin.to_owned(), what };
        if bytes.len() as u64 > MAX_BLOCK_TABLE_SIZE {
            return Err(bad(format!("{} bytes is more than the {MAX_BLOCK_TABLE_SIZE}-byte limit", bytes.len())));
        }
        BlockTable::read_le_args(&mut Cursor::new(bytes), (bytes.len() as u64,)).map_err(|e| bad(describe(&e)))
    }

    /// Parses table bytes for the archive `full` of a manifest: besides [`BlockTable::parse`]'s rules,
    /// the archive's size and SHA-256 must be the manifest's.
    pub fn parse_for(bytes: &[u8], full: &ObjectRef, origin: &str) -> Result<BlockTable> {
        let table = BlockTable::parse(bytes, origin)?;
        let sha256 = hex::encode(table.archive_sha256);
        if table.archive_size != full.size || sha256 != full.sha256 {
            return Err(Error::BadBlockTable {
                origin: origin.to_owned(),
                what: format!(
                    "it describes a {}-byte archive with SHA-256 {sha256}, but the manifest's is {} bytes with SHA-256 {}",
                    table.archive_size, full.size, full.sha256
                ),
            });
        }
        Ok(table)
    }

    /// The table's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        // Writing into memory cannot fail.
        let _ = self.write_le(&mut out);
        out.into_inner()
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.digests.len() as u64
    }

    /// The byte range of block `block` (the last one may be short).
    pub fn block_range(&self, block: u64) -> std::ops::Range<u64> {
        let start = block.saturating_mul(u64::from(self.block_size)).min(self.archive_size);
        start..start.saturating_add(u64::from(self.block_size)).min(self.archive_size)
    }

    /// The blocks `[first, end)` covering bytes `[offset, offset + len)`, clamped to the archive.
    pub fn blocks_of(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        let end = offset.saturating_add(len).min(self.archive_size);
        if offset >= end {
            return 0..0;
        }
        let size = u64::from(self.block_size);
        (offset / size)..end.div_ceil(size)
    }

    /// The embedded blocks as (block number, bytes), in file order; none when nothing is embedded.
    /// Not yet checked against their digests: [`BlockTable::block_matches`] does that.
    pub fn embedded_blocks(&self) -> Vec<(u64, &[u8])> {
        self.split_embedded(&self.embedded)
    }

    /// [`BlockTable::embedded_blocks`] of `embedded`, bytes taken out of this table's `embedded`
    /// (so a mount need not keep them once written).
    pub fn split_embedded<'a>(&self, embedded: &'a [u8]) -> Vec<(u64, &'a [u8])> {
        if embedded.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut at = 0usize;
        for block in cover_of(&self.open_ranges, self.block_size, self.archive_size).into_iter().flatten() {
            let range = self.block_range(block);
            let len = (range.end - range.start) as usize;
            // The parser checked the embedded length against the cover; `get` keeps a hand-built
            // table from panicking.
            let Some(bytes) = embedded.get(at..at + len) else { break };
            out.push((block, bytes));
            at += len;
        }
        out
    }

    /// True when `bytes` are block `block`'s exact content.
    pub fn block_matches(&self, block: u64, bytes: &[u8]) -> bool {
        let range = self.block_range(block);
        usize::try_from(block).ok().and_then(|i| self.digests.get(i)).is_some_and(|digest| {
            bytes.len() as u64 == range.end - range.start && Sha256::digest(bytes).as_slice() == digest.as_slice()
        })
    }

    /// Builds the table of the mf archive at `path` with `block_size`-byte blocks, reading the file
    /// once, a block at a time (nothing else of it is held in memory but the embedded blocks). The
    /// open ranges come from the archive's header and footer; their blocks are embedded when they
    /// total at most [`MAX_EMBEDDED`] bytes (and the table stays within [`MAX_BLOCK_TABLE_SIZE`]).
    pub fn build(path: &Path, block_size: u32) -> Result<BlockTable> {
        if !valid_block_size(block_size) {
            return Err(Error::BadArgument(format!(
                "block size {block_size} is not a power of two from 4 KiB to 16 MiB"
            )));
        }
        let file = mf_format::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
        let archive = mf_format::Archive::from_file(&file, path)?;
        let archive_size = archive.file_len();
        let (index_offset, index_len) = archive.index_extent();
        // Header and commit slots (2.0; a 1.0 header is shorter and the rest is data, harmless to
        // fetch early), then index and footer, which follows the index directly.
        let head = ByteRange { offset: 0, len: mf_format::format::DATA_START.min(archive_size) };
        let tail = ByteRange { offset: index_offset, len: index_len + mf_format::format::FOOTER_LEN };
        drop(archive);
        let open_ranges = if tail.end().is_some_and(|end| end <= archive_size) && tail.offset > 0 {
            vec![head, tail]
        } else {
            vec![head]
        };
        let block_count = archive_size.div_ceil(u64::from(block_size));
        let embed_len = embedded_len_of(&open_ranges, block_size, archive_size);
        let embed = embed_len <= MAX_EMBEDDED
            && table_len_of(archive_size, block_size, open_ranges.len(), embed_len)
                .is_some_and(|len| len <= MAX_BLOCK_TABLE_SIZE);
        let cover = if embed { cover_of(&open_ranges, block_size, archive_size) } else { Vec::new() };
        let mut embedded = Vec::with_capacity(if embed { embed_len as usize } else { 0 });
        let mut digests = Vec::with_capacity(block_count as usize);
        let mut whole = Sha256::new();
        let mut buf = vec![0u8; block_size as usize];
        let mut offset = 0u64;
        let mut reader = std::io::BufReader::new(&file);
        while offset < archive_size {
            let n = (archive_size - offset).min(u64::from(block_size)) as usize;
            reader.read_exact(&mut buf[..n]).map_err(|e| Error::io(path, e))?;
            whole.update(&buf[..n]);
            digests.push(Sha256::digest(&buf[..n]).into());
            let block = offset / u64::from(block_size);
            if cover.iter().any(|run| run.contains(&block)) {
                embedded.extend_from_slice(&buf[..n]);
            }
            offset += n as u64;
        }
        // The archive must not have grown while it was read: the size came from the open.
        if file.read_at(&mut [0u8; 1], archive_size).map_err(|e| Error::io(path, e))? != 0 {
            return Err(Error::Mismatch {
                origin: path.display().to_string(),
                what: "the file grew while it was read".into(),
            });
        }
        Ok(BlockTable {
            block_size,
            archive_size,
            archive_sha256: whole.finalize().into(),
            open_ranges,
            digests,
            embedded,
        })
    }
}

/// A binrw error as a sentence with the byte offset.
fn describe(error: &binrw::Error) -> String {
    match error {
        binrw::Error::BadMagic { .. } => "not a block table (the magic is not MFBLOCK1)".into(),
        binrw::Error::AssertFail { message, .. } => message.clone(),
        binrw::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "truncated".into(),
        binrw::Error::Backtrace(backtrace) => describe(&backtrace.error),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;

    /// A real archive of a few hundred KiB, its bytes and its table.
    fn sample() -> (tempfile::TempDir, Vec<u8>, BlockTable) {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(String, Vec<u8>)> =
            (0..6).map(|i| (format!("f{i}.bin"), mf_test_support::noise(50_000 + i * 999, i as u64))).collect();
        let path = mf_test_support::write_mf(dir.path().join("a.mf"), &files);
        let bytes = std::fs::read(&path).unwrap();
        let table = BlockTable::build(&path, MIN_BLOCK_SIZE).unwrap();
        (dir, bytes, table)
    }

    fn full_of(bytes: &[u8]) -> ObjectRef {
        ObjectRef { path: "full/x.mf".into(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }

    fn error_of(bytes: &[u8]) -> String {
        match BlockTable::parse(bytes, "blocks/t.bin") {
            Err(e @ Error::BadBlockTable { .. }) => e.to_string(),
            other => panic!("expected a BadBlockTable error, got {other:?}"),
        }
    }

    #[test]
    fn a_table_round_trips_and_describes_the_archive() {
        let (_dir, archive, table) = sample();
        assert_eq!(table.archive_size, archive.len() as u64);
        assert_eq!(hex::encode(table.archive_sha256), sha256_hex(&archive));
        assert_eq!(table.block_count(), (archive.len() as u64).div_ceil(4096));
        for (i, chunk) in archive.chunks(4096).enumerate() {
            assert!(table.block_matches(i as u64, chunk), "block {i}");
            assert_eq!(table.block_range(i as u64).start, i as u64 * 4096);
        }
        assert!(!table.block_matches(0, &archive[1..4097]));
        // The open ranges are what Archive::open reads: header + slots, and index + footer at the end.
        let opened = mf_format::Archive::from_bytes(archive.clone(), "a.mf").unwrap();
        let (index_offset, index_len) = opened.index_extent();
        assert_eq!(
            table.open_ranges,
            vec![ByteRange { offset: 0, len: 96 }, ByteRange { offset: index_offset, len: index_len + 40 }]
        );
        assert_eq!(index_offset + index_len + 40, archive.len() as u64);
        // The embedded blocks: block 0 (covering [0, 96)), then every block from the index's to the last.
        let last = table.block_count() - 1;
        let cover: Vec<u64> = std::iter::once(0).chain(index_offset / 4096..=last).collect();
        let embedded = table.embedded_blocks();
        assert_eq!(embedded.iter().map(|(b, _)| *b).collect::<Vec<_>>(), cover);
        for (block, bytes) in &embedded {
            let range = table.block_range(*block);
            assert_eq!(*bytes, &archive[range.start as usize..range.end as usize], "block {block}");
        }
        let tail_len = archive.len() as u64 - (index_offset / 4096) * 4096;
        assert_eq!(table.embedded.len() as u64, 4096 + tail_len);
        let bytes = table.to_bytes();
        assert_eq!(&bytes[..8], b"MFBLOCK1");
        assert_eq!(&bytes[56..64], &(4096 + tail_len).to_le_bytes());
        assert_eq!(bytes.len() as u64, 64 + 2 * 16 + 32 * table.block_count() + 4096 + tail_len);
        assert_eq!(&bytes[bytes.len() - tail_len as usize..], &archive[archive.len() - tail_len as usize..]);
        assert_eq!(BlockTable::parse(&bytes, "t").unwrap(), table);
        assert_eq!(BlockTable::parse_for(&bytes, &full_of(&archive), "t").unwrap(), table);
        // Without embedded blocks: a zero length, and a table that much shorter.
        let plain = BlockTable { embedded: Vec::new(), ..table.clone() };
        let plain_bytes = plain.to_bytes();
        assert_eq!(&plain_bytes[56..64], &[0; 8]);
        assert_eq!(plain_bytes.len() as u64, 64 + 2 * 16 + 32 * table.block_count());
        assert_eq!(BlockTable::parse(&plain_bytes, "t").unwrap(), plain);
        assert!(plain.embedded_blocks().is_empty());
        // The embedded blocks alone, with the rest zero, already open as the archive.
        let mut sparse = vec![0u8; archive.len()];
        for (block, bytes) in &embedded {
            sparse[table.block_range(*block).start as usize..][..bytes.len()].copy_from_slice(bytes);
        }
        assert_eq!(mf_format::Archive::from_bytes(sparse, "s.mf").unwrap().len(), 6);
        assert_eq!(table.blocks_of(4095, 2), 0..2);
        assert_eq!(table.blocks_of(u64::MAX - 1, 10), 0..0);
        assert_eq!(table.blocks_of(5, 0), 0..0);
    }

    #[test]
    fn bad_tables_are_refused_with_the_rule_they_break() {
        let (_dir, archive, table) = sample();
        // The rules of the embedded blocks have a test of their own.
        let good = BlockTable { embedded: Vec::new(), ..table }.to_bytes();
        // Truncated anywhere: in the header, in the ranges, in the digests.
        for cut in [0, 5, 30, 60, good.len() - 1] {
            let err = error_of(&good[..cut]);
            assert!(err.contains("blocks/t.bin") && err.contains("bad block hash table"), "{cut}: {err}");
        }
        assert!(error_of(&good[..good.len() - 1]).contains("needs"), "a short table names the length it needs");
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(error_of(&longer).contains(&format!("is {} bytes", good.len() + 32)));
        let mut magic = good.clone();
        magic[7] = b'2';
        assert!(error_of(&magic).contains("magic"));
        let mut block_size = good.clone();
        block_size[8..12].copy_from_slice(&3000u32.to_le_bytes());
        assert!(error_of(&block_size).contains("block size 3000"));
        block_size[8..12].copy_from_slice(&(32u32 << 20).to_le_bytes());
        assert!(error_of(&block_size).contains("power of two"));
        let mut count = good.clone();
        count[52..56].copy_from_slice(&5u32.to_le_bytes());
        assert!(error_of(&count).contains("5 open ranges"));
        count[52..56].copy_from_slice(&1u32.to_le_bytes());
        assert!(error_of(&count).contains("needs"), "one range fewer: the length no longer adds up");
        let mut outside = good.clone();
        outside[64 + 16..64 + 24].copy_from_slice(&(archive.len() as u64 - 10).to_le_bytes());
        assert!(error_of(&outside).contains("outside"));
        let mut empty = good.clone();
        empty[64 + 8..64 + 16].copy_from_slice(&0u64.to_le_bytes());
        assert!(error_of(&empty).contains("outside"));
        let mut overflow = good.clone();
        overflow[64 + 16..64 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(error_of(&overflow).contains("outside"));
        // A huge block count in a small table: refused by the length rule before anything is allocated.
        let mut huge = good.clone();
        huge[12..20].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        let err = error_of(&huge);
        assert!(err.contains(&format!("needs {} bytes", 64 + 32 + 32 * (u64::MAX - 1).div_ceil(4096))), "{err}");
        huge[12..20].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(error_of(&huge).contains(&format!("needs {} bytes", 64 + 32 + 32 * (1u64 << 38))));
        assert!(error_of(&vec![0u8; (MAX_BLOCK_TABLE_SIZE + 1) as usize]).contains("limit"));

        // Another archive's table: size or hash differ from the manifest's `full`.
        let mut other = full_of(&archive);
        other.size += 1;
        let err = BlockTable::parse_for(&good, &other, "t").unwrap_err().to_string();
        assert!(err.contains("manifest"), "{err}");
        let mut other = full_of(&archive);
        other.sha256 = sha256_hex(b"other");
        assert!(matches!(BlockTable::parse_for(&good, &other, "t"), Err(Error::BadBlockTable { .. })));
    }

    /// `table`'s bytes with the embedded-length field set to `len` and the embedded bytes made `len`
    /// long (cut, or padded with zeros), so only the embedding rule can fail.
    fn with_embedded_len(table: &BlockTable, len: u64) -> Vec<u8> {
        let mut bytes = table.to_bytes();
        let start = bytes.len() - table.embedded.len();
        bytes.resize(start + len as usize, 0);
        bytes[56..64].copy_from_slice(&len.to_le_bytes());
        bytes
    }

    #[test]
    fn the_embedded_length_must_be_exactly_the_open_ranges_blocks_or_zero() {
        let (_dir, _archive, table) = sample();
        let exact = table.embedded.len() as u64;
        assert_eq!(exact, embedded_len_of(&table.open_ranges, table.block_size, table.archive_size));
        assert!(BlockTable::parse(&with_embedded_len(&table, exact), "t").is_ok());
        assert!(BlockTable::parse(&with_embedded_len(&table, 0), "t").is_ok());
        for wrong in [1, 96, 4096, exact - 1, exact + 1, exact + 4096] {
            let err = error_of(&with_embedded_len(&table, wrong));
            assert!(
                err.contains(&format!(
                    "{wrong} embedded bytes, but the blocks covering the open ranges are {exact} bytes"
                )),
                "{wrong}: {err}"
            );
        }
        // A length field that disagrees with the bytes present: the length rule names both.
        let mut short = table.to_bytes();
        short.pop();
        assert!(error_of(&short).contains(&format!("{exact} embedded bytes needs")));
        // A huge length in a small table is refused before anything is allocated for it.
        let mut huge = table.to_bytes();
        huge[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(error_of(&huge).contains("embedded bytes"));
    }

    #[test]
    fn the_cover_is_block_aligned_merged_and_in_file_order() {
        let r = |offset, len| ByteRange { offset, len };
        // Out of order, overlapping, adjacent, and a short last block (archive of 20000 bytes).
        let ranges = [r(16000, 4000), r(100, 5000), r(0, 96), r(8192, 1)];
        assert_eq!(cover_of(&ranges, 4096, 20000), vec![0..5]);
        assert_eq!(embedded_len_of(&ranges, 4096, 20000), 20000);
        assert_eq!(cover_of(&[r(0, 96), r(12288, 10)], 4096, 20000), vec![0..1, 3..4]);
        assert_eq!(embedded_len_of(&[r(0, 96), r(12288, 10)], 4096, 20000), 8192);
        assert_eq!(embedded_len_of(&[r(16384, 3616)], 4096, 20000), 3616);
    }

    #[test]
    fn publishers_embed_nothing_when_the_open_ranges_blocks_exceed_16_mib() {
        // 16 MiB blocks over a 17 MiB archive: the cover is both blocks, 17 MiB.
        let dir = tempfile::tempdir().unwrap();
        let files = vec![("big.bin".to_string(), mf_test_support::noise(17 << 20, 7))];
        let path = mf_test_support::write_mf(dir.path().join("big.mf"), &files);
        let table = BlockTable::build(&path, MAX_BLOCK_SIZE).unwrap();
        assert_eq!(table.block_count(), 2);
        assert!(table.embedded.is_empty());
        let bytes = table.to_bytes();
        assert_eq!(&bytes[56..64], &[0; 8]);
        assert_eq!(BlockTable::parse(&bytes, "t").unwrap(), table);
        // With 4 MiB blocks the cover is block 0 and the last: embedded.
        let table = BlockTable::build(&path, 4 << 20).unwrap();
        assert_eq!(table.embedded_blocks().iter().map(|(b, _)| *b).collect::<Vec<_>>(), vec![0, 4]);
    }

    #[test]
    fn building_refuses_bad_block_sizes_and_non_archives() {
        let (dir, _archive, _table) = sample();
        let path = dir.path().join("a.mf");
        assert!(BlockTable::build(&path, 1000).is_err());
        assert!(BlockTable::build(&path, MAX_BLOCK_SIZE * 2).is_err());
        let big = BlockTable::build(&path, MAX_BLOCK_SIZE).unwrap();
        assert_eq!(big.block_count(), 1);
        std::fs::write(dir.path().join("junk"), b"not an archive").unwrap();
        assert!(BlockTable::build(&dir.path().join("junk"), DEFAULT_BLOCK_SIZE).is_err());
    }
}
