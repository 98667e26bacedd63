//! The update client (spec/RELEASE.md "Updating").

pub mod folder;
