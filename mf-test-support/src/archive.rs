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

/// Writes [`mf_bytes`]`(files)` to `path` and returns `path`.
pub fn write_mf<I: ArchiveInput>(path: impl AsRef<Path>, files: impl IntoIterator<Item = I>) -> PathBuf {
    let path = path.as_ref();
    std::fs::write(path, mf_bytes(files)).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_owned()
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
