//! Building mf archives from (path, bytes) lists.

use std::path::{Path, PathBuf};

use mf_format::{ArchiveWriter, Compression, EntryOptions, WriterOptions};

/// One entry for the builders: `(path, bytes)`, or `(path, bytes, how)` where `how` is the entry's
/// [`EntryOptions`], its [`Compression`], or its Unix mode (`u32`). References work too, so a
/// `&[(&str, Vec<u8>)]` can be passed as is.
pub trait ArchiveInput {
    /// The entry's path inside the archive.
    fn path(&self) -> &str;
    /// The entry's content.
    fn data(&self) -> &[u8];
    /// How the entry is stored.
    fn options(&self) -> EntryOptions {
        EntryOptions::default()
    }
}

impl<P: AsRef<str>, D: AsRef<[u8]>> ArchiveInput for (P, D) {
    fn path(&self) -> &str {
        self.0.as_ref()
    }
    fn data(&self) -> &[u8] {
        self.1.as_ref()
    }
}

impl<P: AsRef<str>, D: AsRef<[u8]>> ArchiveInput for (P, D, EntryOptions) {
    fn path(&self) -> &str {
        self.0.as_ref()
    }
    fn data(&self) -> &[u8] {
        self.1.as_ref()
    }
    fn options(&self) -> EntryOptions {
        self.2
    }
}

impl<P: AsRef<str>, D: AsRef<[u8]>> ArchiveInput for (P, D, Compression) {
    fn path(&self) -> &str {
        self.0.as_ref()
    }
    fn data(&self) -> &[u8] {
        self.1.as_ref()
    }
    fn options(&self) -> EntryOptions {
        EntryOptions { compression: self.2, ..EntryOptions::default() }
    }
}

impl<P: AsRef<str>, D: AsRef<[u8]>> ArchiveInput for (P, D, u32) {
    fn path(&self) -> &str {
        self.0.as_ref()
    }
    fn data(&self) -> &[u8] {
        self.1.as_ref()
    }
    fn options(&self) -> EntryOptions {
        EntryOptions { mode: self.2, ..EntryOptions::default() }
    }
}

impl<T: ArchiveInput + ?Sized> ArchiveInput for &T {
    fn path(&self) -> &str {
        (**self).path()
    }
    fn data(&self) -> &[u8] {
        (**self).data()
    }
    fn options(&self) -> EntryOptions {
        (**self).options()
    }
}

/// The bytes of an mf archive holding `files` in that order, written with default options.
pub fn mf_bytes<I: ArchiveInput>(files: impl IntoIterator<Item = I>) -> Vec<u8> {
    mf_bytes_with(WriterOptions::default(), files)
}

/// [`mf_bytes`] with explicit writer options (level, frame size).
pub fn mf_bytes_with<I: ArchiveInput>(options: WriterOptions, files: impl IntoIterator<Item = I>) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new(), options).expect("valid writer options");
    for file in files {
        let path = file.path();
        writer.add_bytes(path, file.data(), file.options()).unwrap_or_else(|e| panic!("adding {path:?}: {e}"));
    }
    writer.finish().expect("the archive finishes")
}

/// The bytes of a **format 1.0** archive holding `files` in that order (readers still read 1.0; no
/// writer writes it any more). Each entry gets frames of its own, compressed at the options' level
/// when that is shorter (`Compression::Store`: never), laid out as the 1.0 writer did: data from
/// offset 32 in record order, each entry 16-aligned, 8-byte frame ends.
pub fn mf_v1_bytes_with<I: ArchiveInput>(options: WriterOptions, files: impl IntoIterator<Item = I>) -> Vec<u8> {
    use mf_format::format::{self, EntryRecord, Footer, Header, IndexHeader};
    let mut writer = ArchiveWriter::new(Vec::new(), options).expect("valid writer options");
    writer.set_deduplicate(false);
    for file in files {
        let (path, data, entry_options) = (file.path(), file.data(), file.options());
        let compress = entry_options.compression != mf_format::Compression::Store;
        let flags = vec![compress; data.len().div_ceil(options.frame_size())];
        writer
            .add_bytes_with_frames(path, data, entry_options, &flags)
            .unwrap_or_else(|e| panic!("adding {path:?}: {e}"));
    }
    let modern = mf_format::Archive::from_bytes(writer.finish().expect("finishes"), "v1").expect("opens");
    let mut header = Header::new(options.frame_size_log2);
    header.version_major = 1;
    header.version_minor = 0;
    header.header_hash = header.compute_hash();
    let mut out = format::to_bytes(&header);
    let (mut records, mut ends, mut paths) = (Vec::new(), Vec::<u64>::new(), Vec::new());
    for entry in modern.entries() {
        out.resize(out.len().div_ceil(16) * 16, 0);
        let offset = out.len() as u64;
        let first_frame = ends.len() as u32;
        if entry.stored_as() == mf_format::StoredAs::Raw {
            out.extend_from_slice(modern.raw_bytes(&entry).expect("mapped"));
        } else {
            for f in modern.entry_frames(&entry) {
                let frame = modern.frames()[f as usize];
                let at = frame.offset as usize;
                out.extend_from_slice(&modern_bytes(&modern, at, frame.stored_len as usize));
                ends.push(out.len() as u64 - offset);
            }
        }
        let record = entry.record();
        let raw = entry.stored_as() == mf_format::StoredAs::Raw;
        records.push(EntryRecord {
            flags: 0,
            first_frame: if raw { 0 } else { first_frame },
            frame_count: out.len() as u64 - offset, // 1.0: the stored size
            offset,
            ..*record
        });
        paths.push(entry.path().to_owned());
    }
    let mut lookup: Vec<u32> = (0..records.len() as u32).collect();
    lookup.sort_by(|&a, &b| paths[a as usize].cmp(&paths[b as usize]));
    let strings_len: usize = paths.iter().map(String::len).sum();
    let index_header = IndexHeader {
        entry_count: records.len() as u64,
        frame_count: ends.len() as u64,
        strings_len: strings_len as u64,
        dictionary_count: 0,
        reserved: 0,
    };
    let mut index = format::to_bytes(&index_header);
    let mut path_offset = 0u32;
    for (record, path) in records.iter_mut().zip(&paths) {
        record.path_offset = path_offset;
        path_offset += path.len() as u32;
        index.extend_from_slice(&format::to_bytes(record));
    }
    ends.iter().for_each(|end| index.extend_from_slice(&end.to_le_bytes()));
    lookup.iter().for_each(|i| index.extend_from_slice(&i.to_le_bytes()));
    paths.iter().for_each(|p| index.extend_from_slice(p.as_bytes()));
    let footer = Footer::new(out.len() as u64, index.len() as u64, xxh3(&index));
    out.extend_from_slice(&index);
    out.extend_from_slice(&format::to_bytes(&footer));
    out
}

/// `len` bytes of the archive file from `at` (through an entry-independent read of the frame).
fn modern_bytes(archive: &mf_format::Archive, at: usize, len: usize) -> Vec<u8> {
    let frame = archive.frames().iter().position(|f| f.offset as usize == at).expect("a frame starts there");
    let record = archive.frames()[frame];
    assert_eq!(record.stored_len as usize, len);
    archive.stored_frame(frame as u32).expect("frame bytes").into_owned()
}

fn xxh3(bytes: &[u8]) -> u64 {
    mf_format::format::xxh3(bytes)
}

/// Writes [`mf_bytes`]`(files)` to `path` and returns `path`.
pub fn write_mf<I: ArchiveInput>(path: impl AsRef<Path>, files: impl IntoIterator<Item = I>) -> PathBuf {
    let path = path.as_ref();
    std::fs::write(path, mf_bytes(files)).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_owned()
}

/// Where an entry's stored bytes lie in the archive file, as `(offset, len)` pieces: each of its
/// frames, or its raw extent. Panics when the archive has no entry `path`.
pub fn stored_extents(archive: &mf_format::Archive, path: &str) -> Vec<(u64, u64)> {
    let entry = archive.get(path).unwrap_or_else(|| panic!("{path} is in the archive"));
    let frames = archive.entry_frames(&entry);
    if frames.is_empty() {
        return vec![(entry.offset(), entry.stored_size())];
    }
    archive.frames()[frames.start as usize..frames.end as usize]
        .iter()
        .map(|f| (f.offset, u64::from(f.stored_len)))
        .collect()
}

/// Start and end of every stored byte of an entry (its frames, or its raw extent).
pub fn stored_span(archive: &mf_format::Archive, path: &str) -> (u64, u64) {
    let extents = stored_extents(archive, path);
    let start = extents.iter().map(|e| e.0).min().expect("at least one extent");
    let end = extents.iter().map(|e| e.0 + e.1).max().expect("at least one extent");
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_format::{Archive, StoredAs};

    #[test]
    fn every_input_shape_lands_with_its_options() {
        let owned = [("a", b"1".to_vec())];
        let bytes = mf_bytes_with(
            WriterOptions::default(),
            [
                ("b", b"22".to_vec(), EntryOptions { mode: 0o600, ..EntryOptions::default() }),
                ("c", b"333".to_vec(), EntryOptions { compression: Compression::Store, ..EntryOptions::default() }),
            ],
        );
        let archive = Archive::from_bytes(bytes, "t.mf").unwrap();
        assert_eq!(archive.get("b").unwrap().mode(), 0o600);
        assert_eq!(archive.get("c").unwrap().stored_as(), StoredAs::Raw);
        let by_ref = Archive::from_bytes(mf_bytes(&owned), "r.mf").unwrap();
        assert_eq!(&*by_ref.read(&by_ref.get("a").unwrap()).unwrap(), b"1");
        let mode = Archive::from_bytes(mf_bytes([("m", &b"x"[..], 0o755u32)]), "m.mf").unwrap();
        assert_eq!(mode.get("m").unwrap().mode(), 0o755);
    }
}
