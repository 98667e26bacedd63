//! Packing many files from disk: small files are read and compressed in parallel, a bounded batch at
//! a time, large files stream frame by frame; everything is written in the order given, so the
//! archive does not depend on the thread count. While one batch of small files is written, the next
//! one is already being read and compressed, so the writes overlap with compression.

use std::io::Write;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::writer::{prepare_entry, ArchiveWriter, EntryOptions, PreparedEntry, WriterOptions};

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
/// Bytes of small files read into memory at once. Two batches are in memory at a time (one being
/// written, the next being compressed).
const BATCH_BYTES: u64 = 48 << 20;
const BATCH_FILES: usize = 4096;

/// A batch of small files, compressed, waiting to be written in order.
struct ReadyBatch<'a> {
    inputs: &'a [PackInput],
    prepared: Vec<Result<PreparedEntry>>,
}

/// Adds `inputs` in order; `progress` is called after each entry with its size.
pub fn pack_inputs<W: Write>(
    writer: &mut ArchiveWriter<W>,
    inputs: &[PackInput],
    mut progress: impl FnMut(&PackInput, u64),
) -> Result<()> {
    let options = *writer.options();
    let mut rest = inputs;
    let mut ready: Option<ReadyBatch<'_>> = None;
    while let Some(first) = rest.first() {
        if first.size_hint > SMALL_FILE_LIMIT {
            write_batch(writer, ready.take(), &mut progress)?;
            writer.add_file(&first.entry_path, &first.fs_path, first.options)?;
            progress(first, first.size_hint);
            rest = &rest[1..];
            continue;
        }
        let (batch, remaining) = rest.split_at(small_batch_len(rest));
        // Compress this batch on the rayon pool while this thread writes the previous one.
        // (A scope of the current pool, so `--threads` and custom pools are honoured.)
        let previous = ready.take();
        let mut prepared = Vec::new();
        rayon::in_place_scope(|scope| {
            scope.spawn(|_| prepared = prepare_batch(batch, &options));
            write_batch(writer, previous, &mut progress)
        })?;
        ready = Some(ReadyBatch { inputs: batch, prepared });
        rest = remaining;
    }
    write_batch(writer, ready, &mut progress)
}

/// How many of the leading small files of `rest` form the next batch (at least one).
fn small_batch_len(rest: &[PackInput]) -> usize {
    let mut bytes = 0;
    rest.iter()
        .take(BATCH_FILES)
        .take_while(|input| {
            let fits = input.size_hint <= SMALL_FILE_LIMIT && bytes < BATCH_BYTES;
            bytes += input.size_hint;
            fits
        })
        .count()
}

fn prepare_batch(batch: &[PackInput], options: &WriterOptions) -> Vec<Result<PreparedEntry>> {
    batch
        .par_iter()
        .map(|input| {
            let data = std::fs::read(&input.fs_path).map_err(|e| Error::io(&input.fs_path, e))?;
            prepare_entry(input.entry_path.clone(), data, input.options, options)
        })
        .collect()
}

fn write_batch<W: Write>(
    writer: &mut ArchiveWriter<W>,
    batch: Option<ReadyBatch<'_>>,
    progress: &mut impl FnMut(&PackInput, u64),
) -> Result<()> {
    let Some(batch) = batch else { return Ok(()) };
    for (input, entry) in batch.inputs.iter().zip(batch.prepared) {
        let entry = entry?;
        let size = entry.size();
        writer.add_prepared(entry)?;
        progress(input, size);
    }
    Ok(())
}
