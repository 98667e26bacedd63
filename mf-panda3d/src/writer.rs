//! Writes Panda3D multifiles in the packed layout `multify` produces: header, all index entries sorted
//! by name, the terminator, then each subfile's data in the same order (version 1.1).
//!
//! The index comes before the data but holds the data's stored lengths, so the writer reserves the
//! index (its size depends only on names and flags), streams the data, then seeks back to fill it in.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use binrw::BinWrite;

use crate::error::Result;
use crate::format::{
    pad_to_scale, xor_name, Header, IndexEntry, FLAG_COMPRESSED, HEADER_LEN_V1_1, MAGIC,
    MULTIFY_UNCOMPRESSED_EXTENSIONS, VERSION_MAJOR, VERSION_MINOR,
};
use mf_format::validate_path;
use mf_format::Error as FormatError;

/// Archive-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultifileOptions {
    /// Positions are stored divided by this; the writer pads to multiples of it (1: no padding).
    pub scale_factor: u32,
    /// The multifile timestamp (Unix seconds); 0 records no timestamps, like `multify -T 0`.
    pub timestamp: u32,
    /// A `#` line put before the header (e.g. `#!/usr/bin/env panda3d`); `#` and `\n` are added when
    /// missing, as Panda3D does. A single line only.
    pub header_prefix: Option<String>,
}

impl Default for MultifileOptions {
    fn default() -> Self {
        MultifileOptions { scale_factor: 1, timestamp: 0, header_prefix: None }
    }
}

/// One subfile to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubfileSpec {
    /// The subfile's name (a valid entry path).
    pub name: String,
    /// zlib level 0..=9 to compress with, or `None` to store the bytes as they are.
    pub compression_level: Option<u32>,
    /// Unix seconds; 0 means "use the multifile's timestamp".
    pub timestamp: u32,
}

/// `multify -z`'s choice: compress unless the extension is one of jpg, png, mp3, ogg (case-sensitive
/// in Panda3D; compared case-insensitively here, since those formats never gain from zlib).
pub fn multify_would_compress(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((_, ext)) => !MULTIFY_UNCOMPRESSED_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)),
        None => true,
    }
}

/// Streams a multifile out. Call [`add`](Self::add) once per subfile, in the order of
/// [`names`](Self::names) (sorted by name), then [`finish`](Self::finish).
pub struct MultifileWriter<W: Write + Seek> {
    out: W,
    file: PathBuf,
    scale: u64,
    entries: Vec<IndexEntry>,
    /// zlib level of each entry (sorted order), `None` when stored.
    levels: Vec<Option<u32>>,
    /// Absolute position of each entry.
    entry_positions: Vec<u64>,
    position: u64,
    added: usize,
}

fn scaled(position: u64, scale: u64, file: &Path) -> Result<u32> {
    Ok(u32::try_from(position / scale).map_err(|_| {
        FormatError::InvalidOption(format!(
            "{}: position {position} does not fit a Panda3D multifile with scale factor {scale} (raise the scale factor)",
            file.display()
        ))
    })?)
}

impl<W: Write + Seek> MultifileWriter<W> {
    /// Writes the prefix and header and reserves the index. `file` names the output in errors.
    pub fn new(
        mut out: W,
        file: impl Into<PathBuf>,
        options: &MultifileOptions,
        mut specs: Vec<SubfileSpec>,
    ) -> Result<Self> {
        let file = file.into();
        if options.scale_factor == 0 {
            return fail(FormatError::InvalidOption("the scale factor must be at least 1".into()));
        }
        let scale = u64::from(options.scale_factor);
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut seen = HashSet::new();
        for spec in &specs {
            validate_path(&spec.name)?;
            if spec.name.len() > usize::from(u16::MAX) {
                return fail(FormatError::InvalidPath { path: spec.name.clone(), reason: "longer than 65535 bytes" });
            }
            if !seen.insert(spec.name.as_str()) {
                return fail(FormatError::DuplicatePath { path: spec.name.clone() });
            }
            if spec.compression_level.is_some_and(|l| l > 9) {
                return fail(FormatError::InvalidOption(format!("zlib level {:?} is above 9", spec.compression_level)));
            }
        }
        let prefix = match &options.header_prefix {
            None => Vec::new(),
            Some(text) => {
                let mut prefix = text.trim_end_matches('\n').to_owned();
                if prefix.contains('\n') || prefix.contains('\r') {
                    return fail(FormatError::InvalidOption("the header prefix must be a single line".into()));
                }
                if !prefix.starts_with('#') {
                    prefix.insert(0, '#');
                }
                prefix.push('\n');
                prefix.into_bytes()
            }
        };
        let header = Header {
            magic: MAGIC,
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            scale_factor: options.scale_factor,
            timestamp: Some(options.timestamp),
        };
        let io_err = |e| FormatError::io(&file, e);
        out.write_all(&prefix).map_err(io_err)?;
        header.write(&mut out).map_err(|e| FormatError::io(&file, binrw_to_io(e)))?;
        let index_start = pad_to_scale(prefix.len() as u64 + HEADER_LEN_V1_1, scale);

        let mut entries = Vec::with_capacity(specs.len());
        let mut entry_positions = Vec::with_capacity(specs.len());
        let mut position = index_start;
        for spec in &specs {
            let compressed = spec.compression_level.is_some();
            let entry = IndexEntry {
                next: 0,
                data_start: 0,
                data_length: 0,
                flags: if compressed { FLAG_COMPRESSED } else { 0 },
                uncompressed_length: compressed.then_some(0),
                timestamp: Some(spec.timestamp),
                name: xor_name(spec.name.as_bytes()),
            };
            entry_positions.push(position);
            position = pad_to_scale(position + entry.encoded_len(), scale);
            entries.push(entry);
        }
        let terminator_at = position;
        for (i, entry) in entries.iter_mut().enumerate() {
            let next = entry_positions.get(i + 1).copied().unwrap_or(terminator_at);
            entry.next = scaled(next, scale, &file)?;
        }
        let data_start = pad_to_scale(terminator_at + 4, scale);
        // Zeros for the index, the terminator and the padding; the entries are filled in by finish().
        let header_end = prefix.len() as u64 + HEADER_LEN_V1_1;
        io::copy(&mut io::repeat(0).take(data_start - header_end), &mut out).map_err(io_err)?;
        Ok(MultifileWriter {
            out,
            file,
            scale,
            entries,
            levels: specs.iter().map(|s| s.compression_level).collect(),
            entry_positions,
            position: data_start,
            added: 0,
        })
    }

    /// The subfile names in the order [`add`](Self::add) expects them.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| String::from_utf8_lossy(&xor_name(&e.name)).into_owned()).collect()
    }

    /// Name of the subfile the next [`add`](Self::add) writes, if any remain.
    pub fn next_name(&self) -> Option<String> {
        self.entries.get(self.added).map(|e| String::from_utf8_lossy(&xor_name(&e.name)).into_owned())
    }

    /// Writes the next subfile's content from `reader` (compressing it if its spec says so).
    pub fn add(&mut self, reader: &mut dyn Read) -> Result<()> {
        let name =
            self.next_name().ok_or_else(|| FormatError::InvalidOption("more subfiles added than planned".into()))?;
        let file = self.file.clone();
        let io_err = |e| FormatError::io(&file, e);
        let padded = pad_to_scale(self.position, self.scale);
        io::copy(&mut io::repeat(0).take(padded - self.position), &mut self.out).map_err(io_err)?;
        self.position = padded;
        let data_start = scaled(self.position, self.scale, &self.file)?;
        let level = self.levels.get(self.added).copied().flatten().unwrap_or(6);
        let entry = &mut self.entries[self.added];
        let mut counter = CountingWriter { inner: &mut self.out, count: 0 };
        let original = if entry.flags & FLAG_COMPRESSED != 0 {
            let mut encoder = flate2::write::ZlibEncoder::new(&mut counter, flate2::Compression::new(level));
            let original = io::copy(reader, &mut encoder).map_err(io_err)?;
            encoder.finish().map_err(io_err)?;
            original
        } else {
            io::copy(reader, &mut counter).map_err(io_err)?
        };
        let stored = counter.count;
        let too_big = |what: &str| {
            FormatError::InvalidOption(format!(
                "{}: subfile '{name}' is {what} 4 GiB, the Panda3D multifile limit",
                file.display()
            ))
        };
        entry.data_start = data_start;
        entry.data_length = u32::try_from(stored).map_err(|_| too_big("stored in more than"))?;
        if entry.uncompressed_length.is_some() {
            entry.uncompressed_length = Some(u32::try_from(original).map_err(|_| too_big("larger than"))?);
        }
        self.position += stored;
        self.added += 1;
        Ok(())
    }

    /// Pads the end, writes the index and returns the output.
    pub fn finish(mut self) -> Result<W> {
        let file = self.file.clone();
        let io_err = |e| FormatError::io(&file, e);
        if self.added != self.entries.len() {
            return fail(FormatError::InvalidOption(format!(
                "{}: {} subfiles planned but {} written",
                file.display(),
                self.entries.len(),
                self.added
            )));
        }
        let end = pad_to_scale(self.position, self.scale);
        io::copy(&mut io::repeat(0).take(end - self.position), &mut self.out).map_err(io_err)?;
        for (entry, &at) in self.entries.iter().zip(&self.entry_positions) {
            self.out.seek(SeekFrom::Start(at)).map_err(io_err)?;
            entry.write_args(&mut self.out, (true,)).map_err(|e| FormatError::io(&file, binrw_to_io(e)))?;
        }
        self.out.seek(SeekFrom::Start(end)).map_err(io_err)?;
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn binrw_to_io(error: binrw::Error) -> io::Error {
    match error {
        binrw::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Returns `error` as this crate's error (writer failures are all container-level errors).
fn fail<T>(error: FormatError) -> Result<T> {
    Err(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn multify_default_uncompressed_extensions() {
        assert!(!multify_would_compress("a/b.png"));
        assert!(!multify_would_compress("music.OGG"));
        assert!(!multify_would_compress("x.jpg") && !multify_would_compress("x.mp3"));
        assert!(multify_would_compress("x.jpeg"), "multify's list has jpg only");
        assert!(multify_would_compress("model.egg") && multify_would_compress("README"));
    }

    #[test]
    fn packed_layout_matches_multify_byte_for_byte() {
        // `multify -c -T 0 -f plain_T0.mf a.txt b.bin` from the reference hexdump, minus the text flag
        // (0x40 on a.txt), which mf's writer does not set.
        let specs = vec![
            SubfileSpec { name: "b.bin".into(), compression_level: None, timestamp: 0 },
            SubfileSpec { name: "a.txt".into(), compression_level: None, timestamp: 0 },
        ];
        let mut writer =
            MultifileWriter::new(Cursor::new(Vec::new()), "t.mf", &MultifileOptions::default(), specs).unwrap();
        assert_eq!(writer.names(), ["a.txt", "b.bin"]);
        writer.add(&mut &b"hello world\n"[..]).unwrap();
        writer.add(&mut &b"BINARYDATA\x00\x01\x02"[..]).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let mut expected = b"pmf\0\n\r\x01\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
        expected.extend_from_slice(&[0x2b, 0, 0, 0, 0x48, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]);
        expected.extend_from_slice(&[0x9e, 0xd1, 0x8b, 0x87, 0x8b]);
        expected.extend_from_slice(&[0x44, 0, 0, 0, 0x54, 0, 0, 0, 0x0d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]);
        expected.extend_from_slice(&[0x9d, 0xd1, 0x9d, 0x96, 0x91, 0, 0, 0, 0]);
        expected.extend_from_slice(b"hello world\nBINARYDATA\x00\x01\x02");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn refuses_bad_plans() {
        let spec = |name: &str| SubfileSpec { name: name.into(), compression_level: None, timestamp: 0 };
        let new =
            |specs, options: &MultifileOptions| MultifileWriter::new(Cursor::new(Vec::new()), "t", options, specs);
        let ok = MultifileOptions::default();
        assert!(new(vec![spec("a"), spec("a")], &ok).is_err());
        assert!(new(vec![spec("../a")], &ok).is_err());
        assert!(new(vec![spec("a")], &MultifileOptions { scale_factor: 0, ..ok.clone() }).is_err());
        let two_lines = MultifileOptions { header_prefix: Some("a\nb".into()), ..ok.clone() };
        assert!(new(vec![spec("a")], &two_lines).is_err());
        let mut writer = new(vec![spec("a")], &ok).unwrap();
        writer.add(&mut &b"x"[..]).unwrap();
        assert!(writer.add(&mut &b"y"[..]).is_err(), "more subfiles than planned");
        assert!(new(vec![spec("a")], &ok).unwrap().finish().is_err(), "fewer subfiles than planned");
    }
}
