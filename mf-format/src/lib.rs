//! # mf-format: the `.mf` multifile container
//!
//! One file holding many entries (assets, scripts, libraries) that programs read in place. The byte
//! layout is specified in `spec/FORMAT.md`; [`format`](mod@format) mirrors it struct for struct.
//!
//! - [`ArchiveWriter`] streams entries out front to back (the index comes last), compressing each
//!   entry as independent zstd frames in parallel. Memory is bounded by a few frames per thread plus
//!   the index.
//! - [`Archive`] maps a file and reads only the header, footer and index to open. Lookups are a
//!   binary search; raw entries are slices of the mapping; [`Archive::read_at`] decodes only the
//!   frames a range touches; [`Archive::read_into`] decodes a whole entry straight into a buffer of
//!   the caller's (a language binding's own object, say).
//! - Every entry carries the xxh3-64 of its content; the index, header and footer carry their own.
//! - [`Editor`] changes an archive in place (put, remove, commit), crash-safe through the commit
//!   slots, writing only new content; [`compact`] rewrites it without holes ([`edit`]).
//!
//! ## Writing
//!
//! ```
//! use mf_format::{ArchiveWriter, EntryOptions, WriterOptions, Compression};
//!
//! let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default())?;
//! writer.add_bytes("scripts/main.py", b"print('hello')\n", EntryOptions::default())?;
//! let texture = vec![7u8; 100_000];
//! let stored = EntryOptions { compression: Compression::Store, ..EntryOptions::default() };
//! writer.add_reader("textures/wall.raw", &texture[..], stored)?;
//! let bytes: Vec<u8> = writer.finish()?;
//! # Ok::<(), mf_format::Error>(())
//! ```
//!
//! For files on disk, [`AtomicFile`] gives the all-or-nothing output the `mf` tool uses:
//!
//! ```
//! use mf_format::{ArchiveWriter, AtomicFile, EntryOptions, WriterOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! # let target = dir.path().join("game.mf");
//! let mut out = AtomicFile::create(&target)?;
//! let mut writer = ArchiveWriter::new(std::io::BufWriter::new(out.file()), WriterOptions::default())?;
//! writer.add_bytes("readme.txt", b"hi", EntryOptions::default())?;
//! writer.finish()?.into_inner().map_err(|e| e.into_error())?;
//! out.commit()?; // fsync, rename over `target`, fsync the directory
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Reading
//!
//! ```
//! use mf_format::{Archive, ArchiveWriter, EntryOptions, WriterOptions};
//! # let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default())?;
//! # writer.add_bytes("scripts/main.py", b"print('hello')\n", EntryOptions::default())?;
//! # let bytes = writer.finish()?;
//! // `Archive::open(path)` maps a file; `from_bytes` reads a buffer.
//! let archive = Archive::from_bytes(bytes, "game.mf")?;
//! for entry in archive.entries() {
//!     println!("{} {} bytes", entry.path(), entry.size());
//! }
//! let entry = archive.get("scripts/main.py").expect("present");
//! assert_eq!(&archive.read(&entry)?[..], b"print('hello')\n"); // checksum verified
//!
//! let mut middle = [0u8; 5];
//! archive.read_at(&entry, 7, &mut middle)?; // random access
//! assert_eq!(&middle, b"hello");
//!
//! assert!(archive.verify().is_empty()); // every entry's checksum
//! # Ok::<(), mf_format::Error>(())
//! ```
//!
//! ## What this crate must not know
//!
//! Panda3D multifiles (`mf-panda3d`), patches (`mf-diff`), release repositories (`mf-release`) and
//! command-line flags (`mf-cli`): it is the container and the file-system rules every writer of it
//! shares, nothing more.

#![deny(missing_docs)]

pub mod access_order;
pub mod atomic;
pub mod edit;
pub mod error;
pub mod format;
pub mod fs;
pub mod inplace;
pub mod layout;
pub mod mapping;
pub mod pack;
pub mod path;
pub mod policy;
pub mod reader;
pub mod reuse;
pub mod unpack;
mod validate;
pub mod writer;
pub mod x86;

pub use access_order::TraceOrder;
pub use atomic::{remove_pending_temp_files, AtomicFile};
pub use edit::{compact, CommitReport, CompactReport, Editor};
pub use error::{Error, Result};
pub use mapping::Backing;
pub use pack::{
    collect_inputs, order_for_compression, pack_inputs, pack_to_file, pack_to_file_reusing, pack_to_writer,
    pack_to_writer_reusing, Collected, DirPackOptions, PackError, PackInput, PackOrder, PackSummary,
};
pub use path::{entry_path_from_fs, validate_path};
pub use reader::{Archive, Entry, EntryReader, SpaceUse, StoredAs, PLAUSIBLE_RATIO};
pub use reuse::ReuseSource;
pub use unpack::{unpack_in, UnpackEntry, UnpackError, UnpackOptions, UnpackReport};
pub use writer::{
    prepare_entry, prepare_entry_reusing, ArchiveWriter, Compression, EntryOptions, Mtime, PreparedEntry, ReuseReport,
    StoredLayout, WriterOptions, BEST_FRAME_SIZE_LOG2, BEST_LEVEL, DEFAULT_LEVEL,
};
