//! # mf-release: release repositories and updates
//!
//! A release engineer publishes versions of an archive into a **release repository**: a directory of
//! static files (spec/RELEASE.md) that any web server or CDN serves as is. It holds every version's
//! full archive, patches between versions and a signed `manifest.json` listing them. Clients move
//! from whatever version they have to the newest with the fewest bytes, verified end to end.
//!
//! - [`keys`]: ed25519 key pairs in one-line text files.
//! - [`manifest`]: the manifest and file tables, canonical JSON, signing and verification (type,
//!   structure, expiry; rollback against the client's trusted version).
//! - [`plan`]: the cheapest route from the installed version to the target.
//! - [`fetch`]: reading repository files over HTTP(S) or from a directory, with resume and retries.
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
pub mod manifest;
pub mod plan;
pub mod repo;
pub mod update;

pub use error::{Error, Result};
pub use keys::{PublicKey, SecretKey};
pub use manifest::{FileEntry, FileTable, Manifest, ObjectRef, PatchRef, Version};
pub use plan::{plan, Route, Step};
