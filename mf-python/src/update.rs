//! `update()`: bring an archive or an install folder to a release's version, through mf-release's
//! `update_archive` / `update_folder` (what `mf update` calls). The outcome is the dict of
//! `mf update --json`.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mf_release::fetch::FetchOptions;
use mf_release::update::folder::update_folder;
use mf_release::update::{update_archive, Progress, UpdateOptions};
use mf_release::PublicKey;
use pyo3::prelude::*;

use crate::errors::{Failure, Kind, Result};

/// A repository URL or folder, or a key's text or file: given as `str` or as a path.
#[derive(FromPyObject)]
pub enum Text {
    Str(String),
    Path(PathBuf),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::Str(text) => text,
            Text::Path(path) => path.to_string_lossy().into_owned(),
        }
    }
}

/// Calls a Python `progress(done, total, label)` as pieces download. The library calls it from
/// worker code without the GIL; each call takes the GIL for the callback only.
struct Callback {
    callback: Py<PyAny>,
    state: Mutex<Totals>,
}

#[derive(Default)]
struct Totals {
    /// Bytes of the pieces finished before the current one, and of the whole route so far.
    done: u64,
    current: u64,
    total: u64,
    label: String,
}

impl Callback {
    fn report(&self, totals: &Totals) {
        let (done, total, label) = (totals.done + totals.current, totals.total, totals.label.clone());
        Python::attach(|py| {
            if let Err(err) = self.callback.call1(py, (done, total, label)) {
                // The library cannot be interrupted from here; the exception is reported, not lost.
                err.write_unraisable(py, Some(self.callback.bind(py)));
            }
        });
    }
}

impl Progress for Callback {
    fn piece(&self, index: usize, count: usize, label: &str, size: u64) {
        let mut totals = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if index == 0 {
            *totals = Totals::default(); // a new route (the full download after a failed patch route)
        }
        totals.current = 0;
        totals.total += size;
        totals.label = format!("[{}/{count}] {label}", index + 1);
        self.report(&totals);
    }

    fn bytes(&self, have: u64) {
        let mut totals = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        totals.current = have;
        self.report(&totals);
    }

    fn piece_done(&self) {
        let mut totals = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        totals.done += totals.current;
        totals.current = 0;
    }
}

/// Updates `target` (an archive, or with `folder=True` an install folder; by default a folder when
/// `target` is an existing directory) from the release repository `repo` (an http(s)/file URL or a
/// folder), trusting manifests signed by `key` (a `.pub` file or its text). `key=None` requires
/// `allow_unsigned=True`. An mf archive is patched in place unless `rebuild=True` (`--rebuild`);
/// `verify=True` (`--verify`) identifies it by every entry's SHA-256. Returns the outcome as a dict
/// (the keys of `mf update --json`).
#[pyfunction]
#[pyo3(signature = (repo, key, target, *, to = None, check = false, repair = false, folder = None,
                    allow_unsigned = false, timeout = 30.0, retries = 3, progress = None, verify = false,
                    rebuild = false))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments, one per `mf update` option.
pub fn update<'py>(
    py: Python<'py>,
    repo: Text,
    key: Option<Text>,
    target: PathBuf,
    to: Option<String>,
    check: bool,
    repair: bool,
    folder: Option<bool>,
    allow_unsigned: bool,
    timeout: f64,
    retries: u32,
    progress: Option<Py<PyAny>>,
    verify: bool,
    rebuild: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if key.is_none() && !allow_unsigned {
        let what = "key=None accepts an unsigned repository only with allow_unsigned=True";
        return Err(Failure::message(Kind::InvalidOption, what).into());
    }
    if !(timeout > 0.0 && timeout <= 86_400.0) {
        return Err(Failure::message(Kind::InvalidOption, "timeout must be between 0 and 86400 seconds").into());
    }
    let repo = repo.into_string();
    let key = key.map(Text::into_string);
    let folder = folder.unwrap_or_else(|| target.is_dir());
    let callback = progress.map(|callback| Callback { callback, state: Mutex::new(Totals::default()) });
    let json = py.detach(|| -> Result<String> {
        let key = key.map(|text| PublicKey::from_arg(&text)).transpose()?;
        let fetch = FetchOptions {
            timeout: Duration::from_secs_f64(timeout),
            attempts: retries.saturating_add(1),
            ..FetchOptions::default()
        };
        let options = UpdateOptions { key, fetch, to, check, repair, verify, rebuild };
        let progress: &dyn Progress = match &callback {
            Some(callback) => callback,
            None => &mf_release::update::Quiet,
        };
        let json = if folder {
            serde_json::to_string(&update_folder(&repo, &target, &options, progress)?)
        } else {
            serde_json::to_string(&update_archive(&repo, &target, &options, progress)?)
        };
        json.map_err(|e| Failure::message(Kind::Generic, format!("internal error: the outcome is not JSON: {e}")))
    })?;
    py.import("json")?.call_method1("loads", (json,))
}
