//! # mf-diff: subfile-wise patches between `.mf` archives
//!
//! A release engineer turns two archives into a small patch; a client turns its old archive plus the
//! patch into the new archive, exactly. The byte layout is specified in `spec/PATCH.md`.
//!
//! ```
//! use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};
//! use mf_diff::{apply_patch, diff_files, Change, DiffOptions};
//! # let dir = tempfile::tempdir()?;
//! let write = |name: &str, files: &[(&str, &[u8])]| -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
//!     let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default())?;
//!     for (path, data) in files {
//!         writer.add_bytes(path, data, EntryOptions::default())?;
//!     }
//!     let path = dir.path().join(name);
//!     std::fs::write(&path, writer.finish()?)?;
//!     Ok(path)
//! };
//! let text = "the same line\n".repeat(1000);
//! let old = write("v1.mf", &[("a.txt", text.as_bytes()), ("logo.raw", &[7u8; 5000])])?;
//! let new_text = text.replacen("same", "new", 1);
//! let new = write("v2.mf", &[("a.txt", new_text.as_bytes()), ("img/logo.raw", &[7u8; 5000])])?;
//!
//! let patch = dir.path().join("v1-v2.mfp");
//! let report = diff_files(&old, &new, &patch, &DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }, &|_| {})?;
//! assert_eq!(report.count(Change::Changed), 1);
//! assert_eq!(report.count(Change::Renamed), 1); // logo.raw moved: costs a reference
//!
//! let rebuilt = dir.path().join("rebuilt.mf");
//! let outcome = apply_patch(&patch, &old, &rebuilt, &|_| {})?;
//! assert!(outcome.exact);
//! assert_eq!(std::fs::read(&rebuilt)?, std::fs::read(&new)?); // byte for byte
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - **Diff** ([`diff_files`], [`diff_stat`]) works on decompressed entry content. Entries whose
//!   content hash matches an old entry cost a reference (renames, moves and duplicates included);
//!   changed entries get the smallest of a delta ([`delta::DeltaParts`]: the bsdiff model that the
//!   [`matcher`] finds with a libsais suffix array and a cover search with approximate matches,
//!   stored as zstd streams, the delta bytes as runs of zeros and literals: patch format 2.4), zstd
//!   with the old entry as reference prefix, or full zstd, chosen by trial compression at a fast
//!   level; new entries are carried zstd-compressed. Work runs in parallel under a memory budget
//!   ([`DiffOptions::memory_limit`]); entries over 16 MiB, and any too large for the whole-entry
//!   matcher within it, are matched block by block against 16 MiB windows of the old content that a
//!   sparse anchor index picks (several blocks at once), or, when not even a window fits or the
//!   contents are too different, encoded as zstd blocks. A large entry most of whose frames are stored unchanged gets a frames record (patch
//!   format 2.3, [`wire::Op::Frames`]): its unchanged frames are kept by number (found by comparing
//!   stored bytes, nothing decoded) and only the changed runs are encoded, each against a window of
//!   the old entry around it. The output does not depend on the thread count. Two
//!   files that are not archives are diffed whole. Panda3D multifiles are diffed as their canonical
//!   mf conversions ([`panda3d::diff_any`] and [`panda3d::apply_any`] convert, and work on either
//!   format), which [`DiffOptions::old_is_panda3d`] and [`DiffOptions::new_is_panda3d`] record in the
//!   header flags ([`wire::FLAG_OLD_PANDA3D`], [`wire::FLAG_NEW_PANDA3D`]).
//! - **Apply** ([`apply_patch`]) checks the patch's checksums, the base (the old index hash and every
//!   old entry it reads), rebuilds into a temp file beside the target, checks every entry's hash and,
//!   for patches of archives written by this mf version, the whole file's hash, then fsyncs and renames.
//!   A failure at any point leaves the target untouched. Entries are streamed (old content read by
//!   random access, a delta's streams decoded side by side, frames recompressed on every core), so
//!   memory does not grow with entry size.
//! - **In-place apply** ([`apply_in_place`]) edits an mf archive through [`mf_format::Editor`]:
//!   unchanged entries stay where they are, changed and new ones stream through the same checks
//!   into the editor, and one crash-safe commit makes the new version. A frames record's kept frames
//!   stay where they are without being read ([`mf_format::Editor::put_keeping_frames`]; spec/PATCH.md
//!   "Applying in place" says what is then checked). 2.2 patches carry the old and
//!   new [`content_id()`]s, so a base laid out differently (an archive edited in place) is still
//!   recognised by its entries.
//! - **Entry-level apply** ([`Patch::apply_entries`]) walks an archive patch's records against any
//!   [`OldEntries`] source (an archive, or the files of an install folder listed by a release's file
//!   table) and hands each rebuilt [`NewEntry`] to a callback: its bytes, or "a copy of old entry `i`"
//!   so unchanged files need no rewrite. Archive apply uses the same walk.
//!
//! ## What this crate must not know
//!
//! Release repositories, manifests and the network (`mf-release` decides which patch to fetch and
//! when), and command-line flags (`mf-cli`).
#![deny(missing_docs)]

mod apply;
mod budget;
pub mod content_id;
pub mod delta;
mod diff;
pub mod error;
pub mod inplace;
pub mod matcher;
pub mod panda3d;
mod report;
mod source;
pub mod wire;
mod zref;

pub use apply::{apply_patch, ApplyOutcome, BaseMatch, NewContent, NewEntry, OldEntries, OldEntry, Patch};
pub use budget::{default_memory_limit, parse_size};
pub use content_id::content_id;
pub use diff::{diff_files, diff_stat, progress_total, write_patch, DiffOptions};
pub use error::{Error, Result};
pub use inplace::{apply_in_place, can_apply_in_place, EntryCheck, InPlaceOptions, InPlaceOutcome};
pub use report::{Change, EntryReport, Method, PatchReport};
