//! Test inputs and servers shared by every mf crate's tests: a dev-dependency only, never shipped.
//!
//! ```
//! use mf_test_support::{mf_bytes, noise};
//!
//! let bytes = mf_bytes([("a.txt", b"text".to_vec()), ("b.bin", noise(100, 7))]);
//! let archive = mf_format::Archive::from_bytes(bytes, "example.mf")?;
//! assert_eq!(archive.entries().count(), 2);
//! # Ok::<(), mf_format::Error>(())
//! ```
//!
//! It holds the one copy of each generator ([`noise`], [`text`]), the "archive from (path, bytes)"
//! builders ([`mf_bytes`], [`write_mf`]), the tree helpers ([`write_tree`], [`read_tree`],
//! [`copy_tree`]), the Panda3D tool runners and in-memory multifiles ([`panda3d`]), a real nginx
//! ([`nginx`]), the fault proxy ([`faults`]) and FUSE test plumbing ([`fuse`]). It knows the containers through the public APIs of
//! `mf-format` and `mf-panda3d` only, and nothing of the `mf` binary: helpers that run the binary need `CARGO_BIN_EXE_mf` and stay in `tests/common`.
//!
//! Every helper panics on failure: a broken fixture must fail the test, never skip it.
#![deny(missing_docs)]

pub mod faults;
pub mod fuse;
pub mod nginx;
pub mod panda3d;

mod archive;
mod generate;
mod tree;

pub use archive::{mf_bytes, mf_bytes_with, mf_v1_bytes_with, stored_extents, stored_span, write_mf, ArchiveInput};
pub use generate::{noise, text, x86_executable};
pub use tree::{copy_tree, read_tree, sample_assets, write_tree};
