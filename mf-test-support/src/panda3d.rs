//! The real Panda3D tools (the pip package panda3d and its `multify`), located through environment
//! variables that `scripts/test` sets. A missing tool fails the test: it is never skipped. And
//! multifiles built in memory with mf's own writer ([`multifile_bytes`]), for tests that need no tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An environment variable the test needs; panics (never skips) when it is missing.
fn required_env(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => panic!(
            "{name} is not set: the Panda3D tests need the real Panda3D tools. Run scripts/test, or \
             export MF_PANDA3D_PYTHON=$(scripts/panda3d-venv) and MF_MULTIFY=$(dirname $MF_PANDA3D_PYTHON)/multify"
        ),
    }
}

/// The Python of the virtualenv holding the pip package panda3d (`MF_PANDA3D_PYTHON`).
pub fn panda3d_python() -> PathBuf {
    required_env("MF_PANDA3D_PYTHON")
}

/// Panda3D's own `multify` tool (`MF_MULTIFY`).
pub fn multify_bin() -> PathBuf {
    required_env("MF_MULTIFY")
}

fn check_output(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the real `multify` with `args` in `dir` and asserts success; returns stdout.
pub fn multify(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(multify_bin()).args(args).current_dir(dir).output().expect("multify runs");
    check_output(&format!("multify {args:?}"), out)
}

/// Runs a Python script with panda3d importable, in `dir`, and asserts success; returns stdout.
pub fn panda3d_py(dir: &Path, script: &str) -> String {
    let out = Command::new(panda3d_python()).arg("-c").arg(script).current_dir(dir).output().expect("python runs");
    check_output(&format!("python script\n{script}\n"), out)
}

/// Writes `dir/name`, a Panda3D multifile (v1.1, scale 1) laid out by hand, with Python: for shapes the
/// writers refuse or a file system cannot hold. `subfiles_py` is a Python list of
/// `(name, stored_bytes, flags, original_length)`, evaluated with `zlib` imported (flags: 0x08 zlib).
pub fn craft_multifile(dir: &Path, name: &str, subfiles_py: &str) -> PathBuf {
    let script = format!(
        r#"
import struct, zlib
entries = {subfiles_py}
out = bytearray(b'pmf\0\n\r' + struct.pack('<hhII', 1, 1, 1, 0))
names = [bytes(c ^ 0xff for c in n.encode()) for n, _, _, _ in entries]
sizes = [20 + (4 if f & 0x18 else 0) + len(x) for x, (_, _, f, _) in zip(names, entries)]
position, data = len(out), len(out) + sum(sizes) + 4
for (n, stored, flags, original), x, size in zip(entries, names, sizes):
    out += struct.pack('<IIIH', position + size, data, len(stored), flags)
    if flags & 0x18:
        out += struct.pack('<I', original)
    out += struct.pack('<IH', 0, len(x)) + x
    position, data = position + size, data + len(stored)
out += b'\0\0\0\0'
for _, stored, _, _ in entries:
    out += stored
open({name:?}, 'wb').write(out)
"#
    );
    panda3d_py(dir, &script);
    dir.join(name)
}

/// One subfile for [`multifile_bytes`]: name, content, zlib level (`None`: stored as is) and
/// timestamp (Unix seconds; 0: the multifile's).
pub type SubfileInput<'a> = (&'a str, &'a [u8], Option<u32>, u32);

/// A Panda3D multifile with default options (no scale, no timestamp, no header prefix) holding
/// `files`, in any order, written by [`mf_panda3d::MultifileWriter`].
pub fn multifile_bytes(files: &[SubfileInput<'_>]) -> Vec<u8> {
    multifile_bytes_with(1, 0, None, files)
}

/// [`multifile_bytes`] with the multifile options spelled out (`mf_panda3d::MultifileOptions`'
/// fields, passed as plain values so mf-panda3d's own unit tests can call it too).
pub fn multifile_bytes_with(
    scale_factor: u32,
    timestamp: u32,
    header_prefix: Option<&str>,
    files: &[SubfileInput<'_>],
) -> Vec<u8> {
    use mf_panda3d::{MultifileOptions, MultifileWriter, SubfileSpec};
    let options = MultifileOptions { scale_factor, timestamp, header_prefix: header_prefix.map(str::to_owned) };
    let mut sorted = files.to_vec();
    // The writer takes contents in name order.
    sorted.sort_by_key(|file| file.0);
    let specs = sorted
        .iter()
        .map(|&(name, _, compression_level, timestamp)| SubfileSpec {
            name: name.to_owned(),
            compression_level,
            timestamp,
        })
        .collect();
    let mut writer = MultifileWriter::new(std::io::Cursor::new(Vec::new()), "in-memory.p3d", &options, specs)
        .expect("valid subfiles");
    for (_, data, _, _) in &sorted {
        writer.add(&mut &data[..]).expect("write to memory");
    }
    writer.finish().expect("finish in memory").into_inner()
}
