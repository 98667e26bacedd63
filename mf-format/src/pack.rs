//! Packing many files from disk: small files are read and compressed in parallel, a bounded batch at
//! a time, large files stream frame by frame; everything is written in the order given, so the
//! archive does not depend on the thread count.

use std::io::Write;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::writer::{prepare_entry, ArchiveWriter, EntryOptions};

/// One file to pack.
#[derive(Debug, Clone)]
pub struct PackInput {
    /// Path inside the archive.
    pub entry_path: String,
    /// Where to read it.
    pub fs_path: PathBuf,
    /// Size seen when the file was listed; only used to plan batches.
    pub size_hint: u64,
    pub options: EntryOptions,
}

/// Files up to this size are compressed whole in parallel batches; larger ones are streamed.
const SMALL_FILE_LIMIT: u64 = 4 << 20;
/// Bytes of small files read into memory at once.
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_FILES: usize = 4096;

/// Adds `inputs` in order; `progress` is called after each entry with its size.
pub fn pack_inputs<W: Write>(
    writer: &mut ArchiveWriter<W>,
    inputs: &[PackInput],
    mut progress: impl FnMut(&PackInput, u64),
) -> Result<()> {
    let options = *writer.options();
    let mut rest = inputs;
    while let Some(first) = rest.first() {
        if first.size_hint > SMALL_FILE_LIMIT {
            writer.add_file(&first.entry_path, &first.fs_path, first.options)?;
            progress(first, first.size_hint);
            rest = &rest[1..];
            continue;
        }
        let mut bytes = 0;
        let batch_len = rest
            .iter()
            .take(BATCH_FILES)
            .take_while(|input| {
                let fits = input.size_hint <= SMALL_FILE_LIMIT && bytes < BATCH_BYTES;
                bytes += input.size_hint;
                fits
            })
            .count();
        let (batch, remaining) = rest.split_at(batch_len);
        let prepared: Vec<Result<_>> = batch
            .par_iter()
            .map(|input| {
                let data = std::fs::read(&input.fs_path).map_err(|e| Error::io(&input.fs_path, e))?;
                prepare_entry(input.entry_path.clone(), data, input.options, &options)
            })
            .collect();
        for (input, entry) in batch.iter().zip(prepared) {
            let entry = entry?;
            let size = entry.size();
            writer.add_prepared(entry)?;
            progress(input, size);
        }
        rest = remaining;
    }
    Ok(())
}
