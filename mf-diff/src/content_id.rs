//! The **content id** of an archive (spec/PATCH.md, "Content id"): a hash of its entry list in record
//! order, computed from the index alone. Two archives with the same entries in the same record order
//! have the same content id whatever their layout (a fresh pack, or one edited in place with holes,
//! moved frames and a different index hash), so "old entry `i`" of a patch means the same entry in
//! both.

use xxhash_rust::xxh3::Xxh3;

/// One entry as the content id sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry<'a> {
    /// The entry's path.
    pub path: &'a str,
    /// Content size in bytes.
    pub size: u64,
    /// xxh3 of the content.
    pub content_hash: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time seconds (0 when not kept).
    pub mtime_secs: i64,
    /// Modification time nanoseconds.
    pub mtime_nanos: u32,
}

/// Builds a content id entry by entry, in record order.
#[derive(Clone)]
pub struct ContentIdBuilder {
    hasher: Xxh3,
    count: u64,
}

impl Default for ContentIdBuilder {
    fn default() -> Self {
        ContentIdBuilder { hasher: Xxh3::new(), count: 0 }
    }
}

impl ContentIdBuilder {
    /// Adds the next entry in record order.
    pub fn push(&mut self, entry: IdEntry<'_>) {
        let h = &mut self.hasher;
        h.update(&(entry.path.len() as u32).to_le_bytes());
        h.update(entry.path.as_bytes());
        h.update(&entry.size.to_le_bytes());
        h.update(&entry.content_hash.to_le_bytes());
        h.update(&entry.mode.to_le_bytes());
        h.update(&entry.mtime_secs.to_le_bytes());
        h.update(&entry.mtime_nanos.to_le_bytes());
        self.count += 1;
    }

    /// The content id of the entries pushed so far: the entry count hashed last, so lists that are
    /// prefixes of one another differ.
    pub fn finish(mut self) -> u64 {
        self.hasher.update(&self.count.to_le_bytes());
        self.hasher.digest()
    }
}

/// The content id of `archive` (spec/PATCH.md): its entries in record order.
pub fn content_id(archive: &mf_format::Archive) -> u64 {
    let mut builder = ContentIdBuilder::default();
    for entry in archive.entries() {
        let record = entry.record();
        builder.push(IdEntry {
            path: entry.path(),
            size: entry.size(),
            content_hash: entry.content_hash(),
            mode: entry.mode(),
            mtime_secs: record.mtime_secs,
            mtime_nanos: record.mtime_nanos,
        });
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};

    fn archive(files: &[(&str, &[u8])], level: i32) -> mf_format::Archive {
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions { level, ..WriterOptions::default() }).unwrap();
        for (path, data) in files {
            writer.add_bytes(path, data, EntryOptions::default()).unwrap();
        }
        mf_format::Archive::from_bytes(writer.finish().unwrap(), "a.mf").unwrap()
    }

    #[test]
    fn layout_does_not_change_it_but_content_order_and_metadata_do() {
        let text = b"some text that compresses well, some text that compresses well".repeat(50);
        let a = archive(&[("a.txt", &text), ("b.bin", &[1, 2, 3])], 3);
        // Another level: other frame bytes, another index hash, the same entries.
        let b = archive(&[("a.txt", &text), ("b.bin", &[1, 2, 3])], 19);
        assert_ne!(a.footer().index_hash, b.footer().index_hash);
        assert_eq!(content_id(&a), content_id(&b));
        let reordered = archive(&[("b.bin", &[1, 2, 3]), ("a.txt", &text)], 3);
        assert_ne!(content_id(&a), content_id(&reordered));
        let changed = archive(&[("a.txt", &text), ("b.bin", &[1, 2, 4])], 3);
        assert_ne!(content_id(&a), content_id(&changed));
        let renamed = archive(&[("a.txt", &text), ("c.bin", &[1, 2, 3])], 3);
        assert_ne!(content_id(&a), content_id(&renamed));
    }
}
