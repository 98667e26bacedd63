//! # mf-python: the `mfarchive` Python package
//!
//! Python bindings of the mf libraries, built with maturin (`pip install ./mf-python`). Each function
//! binds one library call (mf-format, mf-panda3d, mf-diff, mf-release) and converts arguments, results
//! and errors; the rules live in those crates. Long work runs without the GIL. The Python side
//! (`python/mfarchive`) adds the exception classes, the `io.RawIOBase` entry file and type stubs.
//!
//! ## What this crate must not know
//!
//! Archive, patch and release rules: a call the package needs and a library lacks is added to the
//! library, not written here.

mod archive;
mod errors;
mod patch;
mod update;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(archive::open, m)?)?;
    m.add_class::<archive::Archive>()?;
    m.add_class::<archive::Entry>()?;
    m.add_class::<archive::EntryHandle>()?;
    m.add_function(wrap_pyfunction!(writer::pack, m)?)?;
    m.add_class::<writer::Writer>()?;
    m.add_function(wrap_pyfunction!(patch::diff, m)?)?;
    m.add_function(wrap_pyfunction!(patch::apply, m)?)?;
    m.add_function(wrap_pyfunction!(patch::patch_info, m)?)?;
    m.add_function(wrap_pyfunction!(update::update, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
