//! # mf-release: release repositories and updates
//!
//! A release engineer publishes versions of an archive into a **release repository**: a directory of
//! static files (spec/RELEASE.md) that any web server or CDN serves as is. It holds every version's
//! full archive, patches between versions and a signed `manifest.json` listing them. Clients move
//! from whatever version they have to the newest with the fewest bytes, verified end to end.
//!
//! ```
//! use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};
//! use mf_release::repo::{self, AddOptions, Signing, DEFAULT_EXPIRY};
//! use mf_release::update::{update_archive, Installed, Quiet, UpdateOptions};
//! use mf_release::SecretKey;
//! # let dir = tempfile::tempdir()?;
//! let build = |name: &str, script: &str| -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
//!     let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default())?;
//!     writer.add_bytes("scripts/main.py", script.as_bytes(), EntryOptions::default())?;
//!     writer.add_bytes("textures/wall.raw", &[9u8; 100_000], EntryOptions::default())?;
//!     let path = dir.path().join(name);
//!     std::fs::write(&path, writer.finish()?)?;
//!     Ok(path)
//! };
//!
//! // Publisher: a key pair, then two versions into a repository folder (serve it as static files).
//! let key = SecretKey::generate()?;
//! let repository = dir.path().join("repo");
//! let options = AddOptions {
//!     signing: Signing { key: Some(&key), expires_in: DEFAULT_EXPIRY },
//!     patch_from_last: 3,
//!     memory_limit: 256 << 20,
//! };
//! repo::add(&repository, "1.0", &build("v1.mf", "print('hello')\n")?, &options, &|_| {})?;
//! let added = repo::add(&repository, "1.1", &build("v2.mf", "print('hello, world')\n")?, &options, &|_| {})?;
//! assert_eq!(added.patches.len(), 1); // 1.0 -> 1.1
//!
//! // Client: holds version 1.0 and trusts only the publisher's public key.
//! let installed = dir.path().join("game.mf");
//! std::fs::copy(dir.path().join("v1.mf"), &installed)?;
//! let update = UpdateOptions {
//!     key: Some(key.public()),
//!     fetch: Default::default(),
//!     to: None, // the newest
//!     check: false,
//!     repair: false,
//!     verify: false,  // trust the record of the last update (the index is still checked)
//!     rebuild: false, // patch the archive in place
//! };
//! let outcome = update_archive(repository.to_str().unwrap(), &installed, &update, &Quiet)?;
//! assert_eq!(outcome.installed, Installed::Version { version: "1.0".into() });
//! assert_eq!(outcome.route[0].label(), "patch 1.0 -> 1.1"); // a patch, not the full archive
//! assert!(outcome.in_place); // only what changed was written
//! let (got, want) = (mf_format::Archive::open(&installed)?, mf_format::Archive::open(dir.path().join("v2.mf"))?);
//! assert_eq!(mf_diff::content_id(&got), mf_diff::content_id(&want)); // same entries, in the same order
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`keys`]: ed25519 key pairs in one-line text files.
//! - [`manifest`]: the manifest and file tables, canonical JSON, signing and verification (type,
//!   structure, expiry; rollback against the client's trusted version).
//! - [`plan`](mod@plan): the cheapest route from the installed version to the target.
//! - [`fetch`]: reading repository files over HTTP(S) or from a directory, with resume and retries.
//! - [`lazy`]: an archive of a repository fetched on demand, block by block, each checked against the
//!   signed block hash table, into a local sparse cache file (what `mf mount --repo` serves).
//! - [`update`]: the client: a verified [`update::Session`] on a repository, archive mode, and
//!   [`update::folder`] for plain install folders (journaled, crash-safe switch).
//!
//! ## What this crate must not know
//!
//! Command-line flags and printing: progress reaches callers through [`update::Progress`], failures as typed
//! [`Error`]s, and `mf-cli` decides what to print.
#![deny(missing_docs)]

pub mod error;
pub mod fetch;
pub mod hash;
pub mod keys;
pub mod lazy;
pub mod manifest;
pub mod plan;
pub mod repo;
#[doc(hidden)]
pub mod testing;
pub mod update;

pub use error::{Error, Result};
pub use keys::{PublicKey, SecretKey};
pub use manifest::{FileEntry, FileTable, Manifest, ObjectRef, PatchRef, Version};
pub use plan::{plan, Route, Step};
