//! `mfarchive.open()` and the archive it returns: an mf archive or a Panda3D multifile, read through
//! `mf_panda3d::AnyArchive` (the same entry model the `mf` tool reads both with).
//!
//! The open archive lives in an `Arc`: every call clones it (under a short lock) and then works without
//! the GIL, so threads sharing one `Archive` read concurrently, and `close()` only drops this object's
//! reference, never a mapping that a running read, an entry file or a memoryview still uses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use mf_format::UnpackOptions;
use mf_panda3d::{AnyArchive, AnyEntry, EntryLayout};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMemoryView, PyTuple};

use crate::errors::{closed, Failure, Kind, Result};

/// Reads below this size keep the GIL: releasing and retaking it costs more than the copy.
const DETACH_ABOVE: u64 = 64 << 10;
/// Reads larger than this grow their buffer as content decodes instead of trusting the index's size.
const GROW_ABOVE: u64 = 16 << 20;

/// Opens an mf archive or a Panda3D multifile (detected by its first bytes). `password` decrypts
/// encrypted Panda3D subfiles.
#[pyfunction]
#[pyo3(signature = (path, password = None))]
pub fn open(py: Python<'_>, path: std::path::PathBuf, password: Option<String>) -> PyResult<Archive> {
    let name = path.to_string_lossy().into_owned();
    let archive = py.detach(|| -> Result<AnyArchive> {
        let mut archive = AnyArchive::open(&path)?;
        archive.set_password(password);
        Ok(archive)
    })?;
    Ok(Archive { inner: RwLock::new(Some(Arc::new(archive))), name })
}

/// An open archive (see the package docs and `_native.pyi`).
#[pyclass(frozen, module = "mfarchive._native")]
pub struct Archive {
    inner: RwLock<Option<Arc<AnyArchive>>>,
    name: String,
}

/// One entry's metadata, a snapshot independent of the archive.
#[pyclass(frozen, eq, module = "mfarchive._native")]
#[derive(Clone, PartialEq)]
pub struct Entry {
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    stored_size: u64,
    /// Absolute offset of the entry's stored bytes in the archive file.
    #[pyo3(get)]
    offset: u64,
    #[pyo3(get)]
    mode: u32,
    /// Seconds since the epoch (float), or `None` when the archive did not record it.
    #[pyo3(get)]
    mtime: Option<f64>,
    #[pyo3(get)]
    compression: &'static str,
    #[pyo3(get)]
    is_compressed: bool,
    #[pyo3(get)]
    is_encrypted: bool,
    /// Position in path order: lets `read(entry)` skip the lookup.
    position: usize,
}

impl Entry {
    fn of(entry: &AnyEntry<'_>, position: usize) -> Entry {
        Entry {
            path: entry.path().to_owned(),
            size: entry.size(),
            stored_size: entry.stored_size(),
            offset: entry.offset(),
            mode: entry.mode(),
            mtime: entry.mtime().map(|m| m.secs as f64 + f64::from(m.nanos) / 1e9),
            compression: entry.compression(),
            is_compressed: entry.is_compressed(),
            is_encrypted: entry.is_encrypted(),
            position,
        }
    }
}

#[pymethods]
impl Entry {
    fn __repr__(&self) -> String {
        format!("<Entry {:?} size={} stored_size={} {}>", self.path, self.size, self.stored_size, self.compression)
    }
}

/// Finds the entry `target` (a path or an `Entry`) names; `Err(NotFoundError)` when absent.
fn find<'a>(archive: &'a AnyArchive, target: &Bound<'_, PyAny>) -> PyResult<(AnyEntry<'a>, usize)> {
    let path = if let Ok(entry) = target.cast::<Entry>() {
        let entry = entry.get();
        // An Entry of this archive is found by position; one of another archive by its path.
        if let Some(found) = archive.lookup_entry(entry.position).filter(|e| e.path() == entry.path) {
            return Ok((found, entry.position));
        }
        entry.path.clone()
    } else if let Ok(path) = target.extract::<String>() {
        path
    } else {
        return Err(PyTypeError::new_err("an entry path (str) or an Entry is expected"));
    };
    let position = archive.lower_bound(&path);
    match archive.lookup_entry(position).filter(|e| e.path() == path) {
        Some(entry) => Ok((entry, position)),
        None => Err(not_found(archive, &path).into()),
    }
}

fn not_found(archive: &AnyArchive, path: &str) -> Failure {
    Failure::from(mf_panda3d::Error::NotFound { file: archive.name().to_owned(), path: path.to_owned() })
}

impl Archive {
    /// The open archive, or `ValueError` once closed.
    fn archive(&self) -> PyResult<Arc<AnyArchive>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or_else(|| closed("archive"))
    }
}

#[pymethods]
impl Archive {
    /// The path the archive was opened from.
    #[getter]
    fn path(&self) -> &str {
        &self.name
    }

    /// `"mf"` or `"panda3d"`.
    #[getter]
    fn format(&self) -> PyResult<&'static str> {
        Ok(self.archive()?.format().name())
    }

    /// The format version as `(major, minor)`.
    #[getter]
    fn version(&self) -> PyResult<(u16, u16)> {
        Ok(self.archive()?.version())
    }

    /// Sum of the entries' sizes.
    #[getter]
    fn total_size(&self) -> PyResult<u64> {
        Ok(self.archive()?.total_size())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    /// Drops this object's hold on the archive. Entry files and memoryviews taken from it stay valid.
    fn close(&self) {
        self.inner.write().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        match self.archive() {
            Ok(archive) => format!("<mfarchive.Archive {:?} {} entries>", self.name, archive.len()),
            Err(_) => format!("<mfarchive.Archive {:?} closed>", self.name),
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.archive()?.len())
    }

    /// Entries in path order.
    fn __iter__(&self) -> PyResult<EntryIter> {
        Ok(EntryIter { archive: self.archive()?, position: AtomicUsize::new(0) })
    }

    fn __contains__(&self, path: &Bound<'_, PyAny>) -> PyResult<bool> {
        let archive = self.archive()?;
        Ok(find(&archive, path).is_ok())
    }

    fn __getitem__(&self, path: &Bound<'_, PyAny>) -> PyResult<Entry> {
        let archive = self.archive()?;
        let (entry, position) = find(&archive, path)?;
        Ok(Entry::of(&entry, position))
    }

    /// The entry at `path`, or `default`.
    #[pyo3(signature = (path, default = None))]
    fn get(&self, py: Python<'_>, path: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let archive = self.archive()?;
        let position = archive.lower_bound(path);
        match archive.lookup_entry(position).filter(|e| e.path() == path) {
            Some(entry) => Ok(Py::new(py, Entry::of(&entry, position))?.into_any()),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    /// Every entry path, in path order.
    fn names(&self) -> PyResult<Vec<String>> {
        Ok(self.archive()?.entries_by_path().map(|e| e.path().to_owned()).collect())
    }

    /// An entry's whole content, its checksum verified.
    fn read<'py>(&self, py: Python<'py>, entry: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let archive = self.archive()?;
        let (entry, _) = find(&archive, entry)?;
        let large = entry.size() > DETACH_ABOVE;
        if let (Some(mf), AnyEntry::Mf(mf_entry)) = (archive.as_mf(), &entry) {
            // Decoded straight into the bytes object: no intermediate buffer, no second copy. Only
            // for a size the stored bytes can plausibly hold, as the index's size is sized up front.
            if mf.size_is_plausible(mf_entry) {
                let size = usize::try_from(entry.size()).map_err(|_| {
                    Failure::message(Kind::Io, format!("entry '{}' does not fit in memory", entry.path()))
                })?;
                return PyBytes::new_with(py, size, |out| {
                    // `out` is a new bytes object no other code can see yet: filling it without the
                    // GIL is safe.
                    let filled =
                        if large { py.detach(|| mf.read_into(mf_entry, out)) } else { mf.read_into(mf_entry, out) };
                    Ok(filled.map_err(Failure::from)?)
                });
            }
        }
        let content = if large { py.detach(|| archive.read(&entry)) } else { archive.read(&entry) };
        let content = content.map_err(Failure::from)?;
        PyBytes::new_with(py, content.len(), |out| {
            if large {
                py.detach(|| out.copy_from_slice(&content));
            } else {
                out.copy_from_slice(&content);
            }
            Ok(())
        })
    }

    /// A read-only memoryview of an uncompressed entry's bytes inside the archive, without copying.
    /// With `verify`, the entry's checksum (mf archives) is checked first.
    #[pyo3(signature = (entry, verify = true))]
    fn read_view<'py>(
        &self,
        py: Python<'py>,
        entry: &Bound<'py, PyAny>,
        verify: bool,
    ) -> PyResult<Bound<'py, PyMemoryView>> {
        let archive = self.archive()?;
        let (found, _) = find(&archive, entry)?;
        let EntryLayout::Contiguous(bytes) = archive.layout(&found) else {
            let what = format!("entry '{}' is stored {}: only uncompressed entries can be viewed without a copy; use read() or open_entry()", found.path(), if found.is_encrypted() { "encrypted" } else { found.compression() });
            return Err(Failure::message(Kind::NotRaw, what).into());
        };
        if verify {
            if let (Some(mf), AnyEntry::Mf(mf_entry)) = (archive.as_mf(), &found) {
                let checked = if found.size() > DETACH_ABOVE {
                    py.detach(|| mf.verify_entry(mf_entry))
                } else {
                    mf.verify_entry(mf_entry)
                };
                checked.map_err(Failure::from)?;
            }
        }
        let view = EntryView { start: bytes.as_ptr() as usize, len: bytes.len(), _archive: archive.clone() };
        PyMemoryView::from(Bound::new(py, view)?.as_any())
    }

    /// A seekable binary file object (`io.RawIOBase`) over an entry, decoding only the frames reads touch.
    fn open_entry<'py>(&self, py: Python<'py>, entry: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let archive = self.archive()?;
        let (found, position) = find(&archive, entry)?;
        let handle = EntryHandle {
            path: found.path().to_owned(),
            size: found.size(),
            position,
            cache: Mutex::new(Cache::default()),
            archive: archive.clone(),
        };
        static ENTRY_FILE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let class = ENTRY_FILE.import(py, "mfarchive._entryfile", "EntryFile")?;
        class.call1((handle,))
    }

    /// Checks every entry (in parallel, without the GIL); returns the problems found as exception
    /// instances (`CorruptError`, `PasswordError`...), an empty list when the archive is intact.
    fn verify(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let archive = self.archive()?;
        let errors = py.detach(|| archive.verify());
        Ok(errors.iter().map(|e| Failure::from(e).to_py(py).into_value(py).into_any()).collect())
    }

    /// Extracts all entries, or those `paths` names (exact entries or directories), under `dest`, with
    /// the library's safe extraction. Returns the number of files written.
    #[pyo3(signature = (dest, paths = None, *, overwrite = false))]
    fn extract(
        &self,
        py: Python<'_>,
        dest: std::path::PathBuf,
        paths: Option<Vec<String>>,
        overwrite: bool,
    ) -> PyResult<usize> {
        let archive = self.archive()?;
        let written = py.detach(|| -> Result<usize> {
            let selected = mf_panda3d::select(&archive, &paths.unwrap_or_default())?;
            let report = mf_panda3d::extract(&archive, &selected, &dest, UnpackOptions { overwrite }, &|_| {})?;
            if report.failures.is_empty() {
                return Ok(report.written);
            }
            let message = format!(
                "{} of {} entries were not extracted: {}",
                selected.len() - report.written,
                selected.len(),
                report.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
            );
            let mut failure = Failure::message(Kind::Extract, message);
            failure.failures = report.failures.iter().map(Failure::from).collect();
            failure.written = Some(report.written);
            Err(failure)
        })?;
        Ok(written)
    }
}

/// Iterates an archive's entries in path order.
#[pyclass(frozen, module = "mfarchive._native")]
pub struct EntryIter {
    archive: Arc<AnyArchive>,
    position: AtomicUsize,
}

#[pymethods]
impl EntryIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<Entry> {
        let position = self.position.fetch_add(1, Ordering::Relaxed);
        self.archive.lookup_entry(position).map(|e| Entry::of(&e, position))
    }
}

/// The bytes of one uncompressed entry, exported through the buffer protocol (what `read_view`'s
/// memoryview wraps).
///
/// Soundness: `start..start + len` lies inside the archive's mapping (or owned buffer), which never
/// moves or changes while the `AnyArchive` exists, and this object holds an `Arc` of it. Python keeps
/// the exporter (this object) alive while any memoryview of it exists (`Py_buffer.obj`), so the bytes
/// outlive every view, even after `Archive.close()`. The export is read-only. As with any mapping, a
/// file truncated by another process while mapped makes reads of the lost pages fault (SIGBUS); mf
/// replaces archives by rename, which leaves an open mapping intact.
#[pyclass(frozen, module = "mfarchive._native")]
pub struct EntryView {
    start: usize,
    len: usize,
    _archive: Arc<AnyArchive>,
}

#[pymethods]
impl EntryView {
    /// # Safety
    /// Called by Python with a valid `view` to fill; see the type's soundness note.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: i32) -> PyResult<()> {
        if flags & pyo3::ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("an archive entry's view is read-only"));
        }
        let this = slf.get();
        let len = isize::try_from(this.len).map_err(|_| PyBufferError::new_err("entry too large to view"))?;
        // SAFETY: `view` is valid (Python's contract); the bytes stay valid as the type's note says;
        // FillInfo takes a new reference to `slf`, released with the view.
        let status = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), this.start as *mut std::ffi::c_void, len, 1, flags)
        };
        if status == 0 {
            Ok(())
        } else {
            Err(PyErr::fetch(slf.py()))
        }
    }
}

/// What an entry file keeps between reads: the whole content of an entry that only decodes from its
/// start (zlib or encrypted Panda3D subfiles). Frame-granular reads are cached by the archive.
#[derive(Default)]
struct Cache {
    data: Vec<u8>,
    whole: bool,
}

/// The native side of `mfarchive.EntryFile`: positioned reads of one entry.
#[pyclass(frozen, module = "mfarchive._native")]
pub struct EntryHandle {
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    size: u64,
    position: usize,
    cache: Mutex<Cache>,
    archive: Arc<AnyArchive>,
}

impl EntryHandle {
    /// Fills `out` with content from `offset`; returns the count (less than `out.len()` only at the end).
    fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<usize> {
        let archive = &*self.archive;
        let entry = archive.lookup_entry(self.position).ok_or_else(|| not_found(archive, &self.path))?;
        let len = (out.len() as u64).min(self.size.saturating_sub(offset)) as usize;
        let out = &mut out[..len];
        if len == 0 {
            // At or past the end, as a file read: nothing, not an error.
            return Ok(0);
        }
        match archive.layout(&entry) {
            EntryLayout::Contiguous(bytes) => {
                let start = offset as usize;
                out.copy_from_slice(&bytes[start..start + len]);
            }
            // Positioned reads go where the bytes lie; for frames the archive locates them (they may
            // be shared by a solid block or deduplicated entries) and keeps the last decoded one per
            // thread, so a partial frame is decoded once.
            EntryLayout::Frames { .. } | EntryLayout::Positioned => return Ok(archive.read_at(&entry, offset, out)?),
            EntryLayout::Stream => {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if !cache.whole {
                    cache.data = archive.read(&entry)?.into_owned();
                    cache.whole = true;
                }
                let start = offset as usize;
                out.copy_from_slice(&cache.data[start..start + len]);
            }
        }
        Ok(len)
    }
}

#[pymethods]
impl EntryHandle {
    /// Reads into the writable buffer `buffer` from content offset `offset`; returns the count.
    fn readinto(&self, py: Python<'_>, offset: u64, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let target = PyBuffer::<u8>::get(buffer)?;
        if target.readonly() || !target.is_c_contiguous() {
            return Err(PyTypeError::new_err("readinto() needs a writable, contiguous buffer of bytes"));
        }
        let want = (target.item_count() as u64).min(self.size.saturating_sub(offset)) as usize;
        // Decoded into a buffer of our own without the GIL, then copied with the GIL held: the caller's
        // buffer may be shared with other Python threads, which must not see it written concurrently.
        let mut scratch = vec![0u8; want];
        let n = if want as u64 > DETACH_ABOVE {
            py.detach(|| self.read_into(offset, &mut scratch))
        } else {
            self.read_into(offset, &mut scratch)
        }?;
        // SAFETY: the buffer is writable, C-contiguous and at least `n` bytes long (n <= item_count);
        // `target` holds the export, so it cannot be resized or freed, and the GIL is held.
        unsafe { std::ptr::copy_nonoverlapping(scratch.as_ptr(), target.buf_ptr().cast::<u8>(), n) };
        Ok(n)
    }

    /// Reads up to `size` bytes from content offset `offset`.
    fn read<'py>(&self, py: Python<'py>, offset: u64, size: u64) -> PyResult<Bound<'py, PyBytes>> {
        let want = size.min(self.size.saturating_sub(offset));
        if want > GROW_ABOVE {
            // The size comes from the archive's index, which a damaged file can inflate: the buffer
            // grows as content actually decodes, so a lie costs one chunk, not the claimed size.
            let content = py.detach(|| self.read_growing(offset, want))?;
            return Ok(PyBytes::new(py, &content));
        }
        let want = want as usize;
        let mut n = 0;
        let bytes = PyBytes::new_with(py, want, |out| {
            // `out` is a new bytes object no other code can see yet: filling it without the GIL is safe.
            n = if want as u64 > DETACH_ABOVE {
                py.detach(|| self.read_into(offset, out))
            } else {
                self.read_into(offset, out)
            }?;
            Ok(())
        })?;
        if n == want {
            Ok(bytes)
        } else {
            Ok(PyBytes::new(py, &bytes.as_bytes()[..n]))
        }
    }
}

impl EntryHandle {
    /// Reads `want` bytes from `offset` into a buffer grown a chunk at a time.
    fn read_growing(&self, mut offset: u64, want: u64) -> Result<Vec<u8>> {
        let too_large = |e| Failure::message(Kind::Io, format!("entry '{}': {e}", self.path));
        let mut out = Vec::new();
        while (out.len() as u64) < want {
            let start = out.len();
            let chunk = (want - start as u64).min(GROW_ABOVE) as usize;
            out.try_reserve(chunk).map_err(too_large)?;
            out.resize(start + chunk, 0);
            let got = self.read_into(offset, &mut out[start..])?;
            out.truncate(start + got);
            if got == 0 {
                break;
            }
            offset += got as u64;
        }
        Ok(out)
    }
}
