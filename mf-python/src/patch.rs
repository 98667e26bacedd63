//! Patches: `diff`, `apply` and `patch_info`, through mf-diff's calls for either archive format
//! (`mf_diff::panda3d::{diff_any, apply_any}`), as `mf diff`, `mf apply` and `mf patch-info` use them.
//! Reports come back as dicts with the keys of the CLI's `--json` output.

use std::path::PathBuf;

use mf_diff::panda3d::{self, ArchiveFormat};
use mf_diff::{Change, PatchReport};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{Failure, Kind, Result};

/// A memory budget: a number of bytes or a size such as `"512M"`.
#[derive(FromPyObject)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(self) -> Result<u64> {
        match self {
            Size::Bytes(n) => Ok(n),
            Size::Text(text) => mf_diff::parse_size(&text).ok_or_else(|| {
                Failure::message(Kind::InvalidOption, format!("{text:?} is not a size (examples: 512M, 2G)"))
            }),
        }
    }
}

const CHANGES: [Change; 5] = [Change::Unchanged, Change::Renamed, Change::Changed, Change::Added, Change::Removed];

fn report_dict<'py>(py: Python<'py>, report: &PatchReport, flags: u8) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let (old_format, new_format) = panda3d::patch_formats(flags);
    dict.set_item("kind", if report.archive { "archive" } else { "file" })?;
    dict.set_item("old_format", old_format.name())?;
    dict.set_item("new_format", new_format.name())?;
    dict.set_item("byte_identical", report.exact)?;
    dict.set_item("old_len", report.old_len)?;
    dict.set_item("new_len", report.new_len)?;
    dict.set_item("new_xxh3", format!("{:016x}", report.new_hash))?;
    dict.set_item("patch_len", report.patch_len)?;
    let counts = PyDict::new(py);
    let bytes = PyDict::new(py);
    for change in CHANGES {
        counts.set_item(change.name(), report.count(change))?;
        bytes.set_item(change.name(), report.bytes(change))?;
    }
    dict.set_item("counts", counts)?;
    dict.set_item("bytes", bytes)?;
    let entries = PyList::empty(py);
    for e in &report.entries {
        let entry = PyDict::new(py);
        entry.set_item("change", e.change.name())?;
        entry.set_item("path", &e.path)?;
        entry.set_item("old_path", &e.old_path)?;
        entry.set_item("old_index", e.old_index)?;
        entry.set_item("size", e.size)?;
        entry.set_item("old_size", e.old_size)?;
        entry.set_item("method", e.method.name())?;
        entry.set_item("patch_bytes", e.patch_bytes)?;
        entries.append(entry)?;
    }
    dict.set_item("entries", entries)?;
    Ok(dict)
}

/// Writes a patch from `old` to `new` (mf archives, Panda3D multifiles, or any two files) at `out`,
/// atomically; returns the report. `out=None` only reports what a patch would cost.
#[pyfunction]
#[pyo3(signature = (old, new, out, *, memory_limit = None))]
pub fn diff<'py>(
    py: Python<'py>,
    old: PathBuf,
    new: PathBuf,
    out: Option<PathBuf>,
    memory_limit: Option<Size>,
) -> PyResult<Bound<'py, PyDict>> {
    let memory_limit = match memory_limit {
        Some(size) => size.bytes()?,
        None => mf_diff::default_memory_limit(),
    };
    let diff =
        py.detach(|| panda3d::diff_any(&old, &new, out.as_deref(), memory_limit, &|_| {})).map_err(Failure::from)?;
    report_dict(py, &diff.report, diff.flags)
}

/// Rebuilds the patch's NEW from `old` into `out` (which may be `old` itself), checked and written
/// atomically. `format` is `"mf"` or `"panda3d"` (default: NEW's format, as the patch records it).
#[pyfunction]
#[pyo3(signature = (patch, old, out, *, format = None))]
pub fn apply<'py>(
    py: Python<'py>,
    patch: PathBuf,
    old: PathBuf,
    out: PathBuf,
    format: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let format = match format {
        None => None,
        Some("mf") => Some(ArchiveFormat::Mf),
        Some("panda3d") => Some(ArchiveFormat::Panda3d),
        Some(other) => {
            let what = format!("format {other:?} is not 'mf' or 'panda3d'");
            return Err(Failure::message(Kind::InvalidOption, what).into());
        }
    };
    let outcome = py.detach(|| panda3d::apply_any(&patch, &old, &out, format, &|_| {})).map_err(Failure::from)?;
    let dict = PyDict::new(py);
    dict.set_item("output", out.to_string_lossy())?;
    dict.set_item("format", outcome.format.name())?;
    dict.set_item("entries", outcome.entries)?;
    dict.set_item("bytes", outcome.len)?;
    dict.set_item("byte_identical", outcome.exact)?;
    Ok(dict)
}

/// What the patch at `patch` changes and costs, as a dict (the keys of `mf patch-info --json`).
#[pyfunction]
pub fn patch_info(py: Python<'_>, patch: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let (report, flags) = py.detach(|| panda3d::patch_info_any(&patch)).map_err(Failure::from)?;
    report_dict(py, &report, flags)
}
