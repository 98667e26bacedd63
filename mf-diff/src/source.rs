//! Reading entry content with `pread` rather than through the archive's memory map, so the pages of
//! large entries are not kept resident: memory stays bounded by the buffers asked for. The archive's
//! index (already parsed by `mf_format::Archive`) says where each entry's bytes and frames are.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mf_format::{Archive, Entry, StoredAs};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// An input file: an archive (index parsed) or a plain file.
pub struct Source {
    pub path: PathBuf,
    pub file: File,
    pub archive: Option<Archive>,
    pub len: u64,
}

impl Source {
    /// Opens an archive whose entry data is read with `pread`: a diff or apply reads whole old
    /// entries once, and through a mapping every page read would stay resident until the end.
    pub fn open_archive(path: &Path) -> Result<Source> {
        let archive = Archive::open_pread(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = archive.file_len();
        Ok(Source { path: path.to_owned(), file, archive: Some(archive), len })
    }

    pub fn open_plain(path: &Path) -> Result<Source> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(Source { path: path.to_owned(), file, archive: None, len })
    }

    pub fn read_exact_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        buf.resize(len, 0);
        self.file.read_exact_at(&mut buf, offset).map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }

    /// xxh3 of the whole file, streamed.
    pub fn whole_hash(&self) -> Result<u64> {
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < self.len {
            let n = ((self.len - offset) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], offset).map_err(|e| Error::io(&self.path, e))?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(hasher.digest())
    }

    /// Content bytes `[start, start + len)` of an entry (no checksum verification; zstd frames still
    /// check their own).
    pub fn read_range(&self, entry: &Entry<'_>, start: u64, len: usize) -> Result<Vec<u8>> {
        let archive = self.archive.as_ref().expect("entries only exist in archives");
        let end = start.checked_add(len as u64).filter(|&e| e <= entry.size()).ok_or_else(|| {
            Error::from(mf_format::Error::OutOfRange {
                entry: entry.path().to_owned(),
                offset: start,
                size: entry.size(),
            })
        })?;
        match entry.stored_as() {
            StoredAs::Raw => self.read_exact_at(entry.offset() + start, len),
            StoredAs::Zstd => {
                // Frames may be shared (solid blocks, deduplicated content) and lie anywhere: the
                // archive locates them.
                let mut out = Vec::new();
                out.try_reserve_exact(len).map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
                out.resize(len, 0);
                let read = archive.read_at(entry, start, &mut out)?;
                debug_assert_eq!(read as u64, end - start);
                Ok(out)
            }
        }
    }

    /// The whole content of an entry, checked against its content hash.
    pub fn read_verified(&self, entry: &Entry<'_>) -> Result<Vec<u8>> {
        let len = usize::try_from(entry.size())
            .map_err(|_| Error::io(&self.path, std::io::Error::other("entry does not fit in memory")))?;
        let content = self.read_range(entry, 0, len)?;
        self.check_hash(entry, xxhash_rust::xxh3::xxh3_64(&content))?;
        Ok(content)
    }

    /// Streams an entry through its hash check without keeping it (memory: one frame or 1 MiB).
    pub fn verify_entry(&self, entry: &Entry<'_>) -> Result<()> {
        let mut hasher = Xxh3::new();
        let step = self.archive.as_ref().map_or(1 << 20, |a| a.frame_size()).max(1 << 20);
        let mut at = 0u64;
        while at < entry.size() {
            let n = (entry.size() - at).min(step) as usize;
            hasher.update(&self.read_range(entry, at, n)?);
            at += n as u64;
        }
        self.check_hash(entry, hasher.digest())
    }

    fn check_hash(&self, entry: &Entry<'_>, actual: u64) -> Result<()> {
        if actual != entry.content_hash() {
            return Err(mf_format::Error::ChecksumMismatch {
                file: self.path.clone(),
                entry: entry.path().to_owned(),
                expected: entry.content_hash(),
                actual,
            }
            .into());
        }
        Ok(())
    }
}

/// `Read` over a byte range of a file, by `pread`.
pub(crate) struct RangeReader<'a> {
    pub file: &'a File,
    pub at: u64,
    pub end: u64,
}

impl std::io::Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = ((self.end - self.at) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

type BlobDecoder<'a> = zstd::stream::read::Decoder<'static, std::io::BufReader<RangeReader<'a>>>;

/// One blob of a patch decoded as a stream: a single zstd frame whose window is held to
/// `window_log_max` (so no frame header can make the decoder buffer more), or nothing for an empty
/// blob. [`BlobStream::finish`] checks that the frame ended exactly at the blob's end.
pub(crate) struct BlobStream<'a> {
    decoder: Option<BlobDecoder<'a>>,
    patch: PathBuf,
    at: u64,
    section: &'static str,
    entry: String,
}

impl<'a> BlobStream<'a> {
    pub fn open(
        file: &'a File,
        patch: &Path,
        at: u64,
        len: u64,
        window_log_max: u32,
        section: &'static str,
        entry: &str,
    ) -> Result<BlobStream<'a>> {
        let mut stream = BlobStream { decoder: None, patch: patch.to_owned(), at, section, entry: entry.to_owned() };
        if len > 0 {
            let range = RangeReader { file, at, end: at + len };
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(std::io::BufReader::with_capacity(64 << 10, range))
                    .map_err(|e| stream.corrupt(format!("does not decode: {e}")))?;
            decoder.window_log_max(window_log_max).map_err(|e| stream.corrupt(format!("does not decode: {e}")))?;
            stream.decoder = Some(decoder.single_frame());
        }
        Ok(stream)
    }

    fn corrupt(&self, what: String) -> Error {
        Error::CorruptPatch {
            file: self.patch.clone(),
            section: self.section,
            offset: self.at,
            entry: Some(self.entry.clone()),
            what,
        }
    }

    /// Turns a read error into a patch error (`eof` when the stream ended before the bytes needed).
    pub fn error(&self, e: std::io::Error, eof: &str) -> Error {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(eof.to_owned()),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::Other => {
                self.corrupt(format!("blob at offset {} does not decode: {e}", self.at))
            }
            _ => Error::io(&self.patch, e),
        }
    }

    /// Checks that `what` has no bytes left and its frame ended exactly at the blob's end.
    pub fn finish(&mut self, what: &str) -> Result<()> {
        use std::io::{BufRead, Read};
        let mut byte = [0u8; 1];
        let n = self.read(&mut byte).map_err(|e| self.error(e, "ends early"))?;
        let Some(decoder) = self.decoder.as_mut() else { return Ok(()) };
        let reader = decoder.get_mut();
        let rest = reader.fill_buf().map_err(|e| Error::io(&self.patch, e))?.len();
        if n != 0 || rest != 0 {
            return Err(self.corrupt(format!("{what} holds more bytes than its controls use")));
        }
        Ok(())
    }
}

impl std::io::Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.decoder.as_mut() {
            Some(decoder) => decoder.read(buf),
            None => Ok(0),
        }
    }
}
