//! Panda3D Multifiles (`.mf` files of the Panda3D engine, magic `pmf\0\n\r`), specified in
//! `spec/PANDA3D.md`: read in place ([`Multifile`]), written in `multify`'s packed layout
//! ([`MultifileWriter`]).

pub mod crypto;
pub mod format;
pub mod reader;
pub mod writer;

pub use reader::{looks_like_multifile, Multifile, Signature, Subfile, SubfileReader};
pub use writer::{multify_would_compress, MultifileOptions, MultifileWriter, SubfileSpec};
