//! Writing mf archives: `pack()` of directories by the rules `mf pack` applies (`mf_format::pack`), and
//! the streaming `Writer` (`mf_format::ArchiveWriter` into an `AtomicFile`: the target appears only
//! when `close()` completes, and an aborted or failed writer leaves nothing behind).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use mf_format::{
    collect_inputs, pack_to_file, ArchiveWriter, AtomicFile, Compression, DirPackOptions, EntryOptions, Mtime,
    PackOrder, WriterOptions, DEFAULT_LEVEL,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyTuple;

use crate::errors::{closed, Failure, Kind, Result};

/// Default frame size in bytes (`mf pack --frame-size 256K`).
const DEFAULT_FRAME_SIZE: u64 = 1 << 18;

/// Writer options from the Python arguments; a frame size must be a power of two.
fn writer_options(level: i32, frame_size: u64) -> Result<WriterOptions> {
    if !frame_size.is_power_of_two() {
        return Err(Failure::message(Kind::InvalidOption, format!("frame_size {frame_size} is not a power of two")));
    }
    let options = WriterOptions { level, frame_size_log2: frame_size.trailing_zeros().min(255) as u8 };
    options.validate()?;
    Ok(options)
}

fn compression(name: &str) -> Result<Compression> {
    match name {
        "auto" => Ok(Compression::Auto),
        "store" => Ok(Compression::Store),
        "zstd" => Ok(Compression::Zstd),
        other => Err(Failure::message(
            Kind::InvalidOption,
            format!("compression {other:?} is not one of 'auto', 'store', 'zstd'"),
        )),
    }
}

/// A directory path or a sequence of them.
#[derive(FromPyObject)]
pub enum Sources {
    Many(Vec<PathBuf>),
    One(PathBuf),
}

/// Packs directories into an archive at `out` exactly as `mf pack` does; returns the entry count.
#[pyfunction]
#[pyo3(signature = (sources, out, *, level = DEFAULT_LEVEL, store = Vec::new(), exclude = Vec::new(),
                    frame_size = DEFAULT_FRAME_SIZE, keep_mtime = false, follow_symlinks = false))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments, one per `mf pack` option.
pub fn pack(
    py: Python<'_>,
    sources: Sources,
    out: PathBuf,
    level: i32,
    store: Vec<String>,
    exclude: Vec<String>,
    frame_size: u64,
    keep_mtime: bool,
    follow_symlinks: bool,
) -> PyResult<usize> {
    let dirs = match sources {
        Sources::Many(dirs) => dirs,
        Sources::One(dir) => vec![dir],
    };
    let entries = py.detach(|| -> Result<usize> {
        let options = DirPackOptions {
            writer: writer_options(level, frame_size)?,
            store_extensions: store,
            excludes: exclude,
            files_from: None,
            order_from: None,
            keep_mtime,
            follow_symlinks,
            // The same data order as `mf pack`'s default: similar files together in solid blocks.
            order: PackOrder::default(),
        };
        let collected = collect_inputs(&dirs, Some(&out), &options)?;
        Ok(pack_to_file(&collected.inputs, &out, options.writer, |_, _| {})?)
    })?;
    Ok(entries)
}

struct Open {
    writer: ArchiveWriter<BufWriter<File>>,
    out: AtomicFile,
}

/// A streaming archive writer (see `_native.pyi`).
#[pyclass(frozen, module = "mfarchive._native")]
pub struct Writer {
    state: Mutex<Option<Open>>,
    #[pyo3(get)]
    path: String,
}

impl Writer {
    /// Runs `work` on the open writer without the GIL; a failure aborts the archive (the temp file is
    /// removed), since a writer that failed mid-entry cannot go on.
    fn with_open<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut ArchiveWriter<BufWriter<File>>) -> Result<T> + Send,
    ) -> PyResult<T> {
        // `Err(None)`: the writer was already closed or aborted.
        let result = py.detach(|| -> Result<T, Option<Failure>> {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let open = state.as_mut().ok_or(None)?;
            let result = work(&mut open.writer);
            if result.is_err() {
                state.take();
            }
            result.map_err(Some)
        });
        result.map_err(|failure| failure.map_or_else(|| closed("writer"), PyErr::from))
    }
}

#[pymethods]
impl Writer {
    #[new]
    #[pyo3(signature = (path, *, level = DEFAULT_LEVEL, frame_size = DEFAULT_FRAME_SIZE))]
    fn new(py: Python<'_>, path: PathBuf, level: i32, frame_size: u64) -> PyResult<Writer> {
        let name = path.to_string_lossy().into_owned();
        let open = py.detach(|| -> Result<Open> {
            let options = writer_options(level, frame_size)?;
            let io = |error: std::io::Error| Failure::from(mf_format::Error::io(&path, error));
            let mut out = AtomicFile::create_removing_stale(&path).map_err(io)?;
            // The writer gets its own handle of the temp file; `out` keeps the name to commit or remove.
            let file = out.file().try_clone().map_err(io)?;
            let writer = ArchiveWriter::with_name(BufWriter::with_capacity(1 << 20, file), options, &path)?;
            Ok(Open { writer, out })
        })?;
        Ok(Writer { state: Mutex::new(Some(open)), path: name })
    }

    /// Adds an entry with `data` (bytes or bytearray) as its content.
    #[pyo3(signature = (path, data, *, mode = 0o644, compression = "auto", mtime = None))]
    fn add(
        &self,
        py: Python<'_>,
        path: String,
        data: PyBackedBytes,
        mode: u32,
        compression: &str,
        mtime: Option<f64>,
    ) -> PyResult<()> {
        let options = entry_options(mode, compression, mtime)?;
        self.with_open(py, move |writer| Ok(writer.add_bytes(&path, &data, options)?))
    }

    /// Adds the file at `source` (streamed, frame by frame) as entry `path`. Its mode is normalised
    /// as `mf pack` does (0755 if executable, else 0644); its mtime is kept only with `keep_mtime`.
    #[pyo3(signature = (path, source, *, compression = "auto", keep_mtime = false))]
    fn add_file(
        &self,
        py: Python<'_>,
        path: String,
        source: PathBuf,
        compression: &str,
        keep_mtime: bool,
    ) -> PyResult<()> {
        let how = self::compression(compression)?;
        // Checked before the writer is touched: a missing source is no reason to abort the archive.
        let metadata = std::fs::metadata(&source).map_err(|e| Failure::from(mf_format::Error::io(&source, e)))?;
        let options = EntryOptions { compression: how, ..EntryOptions::from_metadata(&metadata, keep_mtime) };
        self.with_open(py, move |writer| Ok(writer.add_file(&path, &source, options)?))
    }

    /// Entries added so far.
    fn __len__(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(0, |open| open.writer.len())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    /// Writes the index and moves the archive into place (fsync, rename, directory fsync); returns the
    /// entry count. Nothing exists at `path` (or the old file is untouched) until this succeeds.
    fn close(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| -> Result<usize> {
            let Some(Open { writer, out }) = self.state.lock().unwrap_or_else(PoisonError::into_inner).take() else {
                return Ok(0);
            };
            let entries = writer.len();
            let sink = writer.finish()?;
            let target = out.target().to_owned();
            let io = |error: std::io::Error| Failure::from(mf_format::Error::io(&target, error));
            sink.into_inner().map_err(|e| io(e.into_error()))?;
            out.commit().map_err(io)?;
            Ok(entries)
        })
        .map_err(PyErr::from)
    }

    /// Discards the archive being written: the temp file is removed, `path` is left as it was.
    fn abort(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes (commits) on a normal exit, aborts when the block raised.
    #[pyo3(signature = (*args))]
    fn __exit__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let raised = args.get_item(0).is_ok_and(|kind| !kind.is_none());
        if raised {
            self.abort();
        } else {
            self.close(py)?;
        }
        Ok(false)
    }
}

fn entry_options(mode: u32, compression: &str, mtime: Option<f64>) -> Result<EntryOptions> {
    let mtime = match mtime {
        Some(seconds) if seconds.is_finite() => {
            let secs = seconds.floor();
            Some(Mtime { secs: secs as i64, nanos: ((seconds - secs) * 1e9).min(999_999_999.0) as u32 })
        }
        Some(_) => return Err(Failure::message(Kind::InvalidOption, "mtime must be a finite number of seconds")),
        None => None,
    };
    Ok(EntryOptions { compression: self::compression(compression)?, mode, mtime })
}
