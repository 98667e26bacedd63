//! # mf-panda3d: Panda3D multifiles for mf
//!
//! Reads and writes the multifiles of the Panda3D engine (magic `pmf\0\n\r`, specified in
//! `spec/PANDA3D.md`), offers one entry model over them and mf's own `.mf` archives ([`AnyArchive`]),
//! and converts between the two formats. The conversion to mf with default options is the
//! *canonical mf conversion* that `spec/PATCH.md` makes normative for Panda3D-flagged patches.
//!
//! ```
//! use mf_panda3d::{convert_to_file, AnyArchive, ConvertOptions, MultifileOptions, MultifileWriter, SubfileSpec, Target};
//!
//! // Write a multifile the way `multify -z` would: subfiles in name order, zlib where it helps.
//! let specs = vec![
//!     SubfileSpec { name: "models/box.egg".into(), compression_level: Some(6), timestamp: 0 },
//!     SubfileSpec { name: "readme.txt".into(), compression_level: None, timestamp: 0 },
//! ];
//! let mut writer =
//!     MultifileWriter::new(std::io::Cursor::new(Vec::new()), "game.mf", &MultifileOptions::default(), specs)?;
//! writer.add(&mut &[b'x'; 10_000][..])?; // models/box.egg
//! writer.add(&mut &b"hello"[..])?; // readme.txt
//! let bytes = writer.finish()?.into_inner();
//!
//! // Read it through the format-agnostic view (the format is detected from the first bytes).
//! let archive = AnyArchive::from_bytes(bytes, "game.mf")?;
//! let readme = archive.get("readme.txt").expect("present");
//! assert_eq!(&archive.read(&readme)?[..], b"hello");
//! assert_eq!(archive.get("models/box.egg").unwrap().compression(), "zlib");
//!
//! // Its canonical mf conversion, written atomically.
//! # let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().join("game-canonical.mf");
//! convert_to_file(&archive, &out, &ConvertOptions::canonical(Target::Mf))?;
//! assert_eq!(mf_format::Archive::open(&out)?.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`edit`] changes multifiles in place (`mf add`, `mf rm`, `mf compact`), crash-safe, in shapes
//! Panda3D itself reads (`spec/PANDA3D.md`, "Editing in place").
//!
//! ## What this crate must not know
//!
//! Command-line flags, file-system policy beyond atomic output, and patches: `mf-diff` decides how
//! Panda3D archives are diffed (through [`convert_to_file`]), `mf-cli` only parses and prints.
//!
//! ## Features
//!
//! - `crypto` (default): decrypting subfiles as Panda3D does (Blowfish, AES, DES with PBKDF2-SHA1
//!   keys). Without it encrypted subfiles are listed, and reading one fails with [`Error::Decrypt`].

#![deny(missing_docs)]

pub mod any;
pub mod convert;
#[cfg(feature = "crypto")]
pub mod crypto;
pub mod edit;
pub mod error;
pub mod extract;
#[allow(missing_docs)] // On-disk fields, documented table by table in spec/PANDA3D.md.
pub mod format;
pub mod reader;
pub mod writer;

pub use any::{AnyArchive, AnyEntry, ArchiveFormat, EntryLayout};
pub use convert::{convert_to_file, ConvertOptions, Target, MULTIFY_DEFAULT_LEVEL};
pub use edit::MultifileEditor;
pub use error::{Error, Result};
pub use extract::{extract, select, ExtractError};
pub use reader::{looks_like_multifile, Multifile, Signature, Subfile, SubfileReader};
pub use writer::{multify_would_compress, MultifileOptions, MultifileWriter, SubfileSpec};

/// Stand-in for the `crypto` module when the feature is off: every decryption fails with a reason.
#[cfg(not(feature = "crypto"))]
mod crypto {
    pub fn decrypt(_stored: &[u8], _password: &str) -> Result<Vec<u8>, String> {
        Err("this build has no Panda3D decryption (mf-panda3d's `crypto` feature is off)".into())
    }
}
