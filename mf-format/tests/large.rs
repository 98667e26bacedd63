//! 64-bit sizes and offsets: a raw entry of 5 GiB followed by a small entry that starts past 5 GiB.
//! The archive is written through a sparse-file adapter, so it costs neither disk nor much time.

use std::fs::File;
use std::io::{self, Read, Write};

use std::os::unix::fs::FileExt;

use mf_format::format::{self, EntryRecord, Footer, IndexHeader};
use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, StoredAs, WriterOptions};

const GIB: u64 = 1 << 30;
const BIG: u64 = 5 * GIB + 12_345;

/// A `Write` over a file that skips all-zero chunks instead of writing them (leaving holes), and
/// sets the file length when flushed.
struct SparseWriter {
    file: File,
    position: u64,
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

fn all_zero(buf: &[u8]) -> bool {
    // Slice equality is a memcmp, fast even in an unoptimised test build.
    buf.chunks(ZEROS.len()).all(|chunk| chunk == &ZEROS[..chunk.len()])
}

impl Write for SparseWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !all_zero(buf) {
            self.file.write_all_at(buf, self.position)?;
        }
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.set_len(self.position)
    }
}

#[test]
fn entries_larger_than_4_gib_and_offsets_beyond_4_gib_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.mf");
    let sink = SparseWriter { file: File::create(&path).unwrap(), position: 0 };
    let mut writer = ArchiveWriter::new(sink, WriterOptions::default()).unwrap();
    let store = EntryOptions { compression: Compression::Store, ..EntryOptions::default() };
    writer.add_reader("huge/zeros.bin", io::repeat(0).take(BIG), store).unwrap();
    let tail = b"the entry after five gibibytes\n".repeat(100);
    writer.add_bytes("tail.txt", &tail, EntryOptions::default()).unwrap();
    writer.finish().unwrap();

    let metadata = std::fs::metadata(&path).unwrap();
    assert!(metadata.len() > BIG);
    {
        use std::os::unix::fs::MetadataExt;
        assert!(metadata.blocks() * 512 < 64 << 20, "the test archive is sparse");
    }

    let archive = Archive::open(&path).unwrap();
    assert_eq!(archive.len(), 2);
    let huge = archive.get("huge/zeros.bin").unwrap();
    assert_eq!(huge.size(), BIG);
    assert_eq!(huge.stored_size(), BIG);
    assert_eq!(huge.stored_as(), StoredAs::Raw);
    assert_eq!(huge.offset(), format::DATA_START);
    let small = archive.get("tail.txt").unwrap();
    assert!(small.offset() > BIG && small.offset() > u64::from(u32::MAX), "offset {}", small.offset());
    assert_eq!(small.offset() % 16, 0);
    assert_eq!(archive.total_size(), BIG + tail.len() as u64);

    // Random access near the end of the big entry, and across its last byte.
    let mut buf = vec![0xffu8; 4096];
    assert_eq!(archive.read_at(&huge, BIG - 1000, &mut buf).unwrap(), 1000);
    assert!(buf[..1000].iter().all(|&b| b == 0));
    assert_eq!(archive.read_at(&huge, 4 * GIB + 7, &mut buf).unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(archive.read_at(&huge, BIG, &mut buf).unwrap(), 0);
    assert!(archive.read_at(&huge, BIG + 1, &mut buf).is_err());
    // A raw entry is handed out as one slice of the mapping, whatever its size.
    assert_eq!(archive.raw_bytes(&huge).map(|b| b.len() as u64), Some(BIG));

    assert_eq!(&archive.read(&small).unwrap()[..], &tail[..]);
    let mut middle = [0u8; 30];
    archive.read_at(&small, 31 * 50, &mut middle).unwrap();
    assert_eq!(&middle[..], &tail[31 * 50..31 * 50 + 30]);
    archive.verify_entry(&small).unwrap();

    // The index itself records the 64-bit values.
    let file = File::open(&path).unwrap();
    let (index_offset, index_len) = archive.index_extent();
    assert!(index_offset > BIG);
    let mut index = vec![0u8; index_len as usize];
    file.read_exact_at(&mut index, index_offset).unwrap();
    let header: IndexHeader = format::from_bytes(&index).unwrap();
    assert_eq!(header.entry_count, 2);
    let records: Vec<EntryRecord> = (0..2).map(|i| format::from_bytes(&index[32 + 64 * i..]).unwrap()).collect();
    assert_eq!(records[0].size, BIG);
    // The small text entry went into the solid stream: its frame record holds the 64-bit offset.
    assert_eq!(records[1].first_frame, 0);
    let frame: format::FrameRecord = format::from_bytes(&index[32 + 64 * 2..]).unwrap();
    assert!(frame.offset > 1 << 32);
    let mut footer = [0u8; 40];
    file.read_exact_at(&mut footer, metadata.len() - 40).unwrap();
    let footer: Footer = format::from_bytes(&footer).unwrap();
    assert_eq!(footer.index_offset, index_offset);
}
